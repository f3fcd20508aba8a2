"""The featpipe command as a user meets it: help, version, and one-line errors."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import __version__
from pipeline.cli import cli, run


def test_version_and_help():
    runner = CliRunner()
    assert runner.invoke(cli, ["--version"]).output.strip() == f"featpipe, version {__version__}"
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for stage in ("prepare", "extract", "baseline", "train", "report", "backbones"):
        assert stage in result.output


def test_help_does_not_import_tensorflow():
    # `featpipe --help` must answer at once: no deep-learning import at start-up.
    code = "import sys; from pipeline.cli import cli; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def _fail(args, capsys):
    with pytest.raises(SystemExit) as exited:
        run(cli, args, prog_name="featpipe")
    return exited.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["nonsense"], "No such command 'nonsense'"),
        (["prepare", "--no-such-option"], "--no-such-option"),
        (["prepare", "--params", "missing.yaml"], "params file not found: missing.yaml"),
    ],
)
def test_user_mistakes_end_in_one_line_and_exit_2(args, message, capsys, in_tmp_project):
    code, err = _fail(args, capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("featpipe: error: ")
    assert message in err


def test_bad_params_value_names_the_key(capsys, in_tmp_project):
    (in_tmp_project / "params.yaml").write_text("data:\n  train_size: -3\n")
    code, err = _fail(["prepare"], capsys)
    assert code == 2
    assert err == "featpipe: error: params: data.train_size: expected an integer >= 1 or null, got -3\n"


def test_console_script_prints_no_traceback(in_tmp_project):
    script = Path(sys.executable).parent / "featpipe"  # the console script installed beside this Python
    result = subprocess.run([str(script), "prepare", "--params", "nope.yaml"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "featpipe: error: params file not found: nope.yaml (run from the project root or pass --params)"


# TensorFlow's start-up lines (oneDNN, CPU features, CUDA probing): its C++ log lines in absl's format
# (TensorFlow 2.21: "I0000 00:00:..."), or the older one (2.20: "2026-12-07 18:51:30.681887: I tensorflow/..."),
# and absl's note on them; none of featpipe's own lines starts like this.
TENSORFLOW_LINE = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d[\d.]*|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] "
    r"|WARNING: All log messages before absl::InitializeLog)", re.M)


def test_tensorflow_start_up_lines_only_under_verbose(tiny_image_store, tmp_path):
    from plumbing.backend import load_keras

    keras = load_keras()
    inputs = keras.Input((16, 16, 1))
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.Conv2D(2, 3)(inputs)))
    model.save(tmp_path / "tiny.keras")
    script = Path(sys.executable).parent / "featpipe"
    args = ["extract", "--file", str(tmp_path / "tiny.keras"), "--layer", "pool", "--images", str(tiny_image_store)]

    def stderr_of(*options, **env):
        base = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
        done = subprocess.run([str(script), *options, *args, "--overwrite"], capture_output=True, text=True,
                              cwd=tmp_path, env={**base, **env})
        assert done.returncode == 0, done.stderr
        return done.stderr

    # TF_CPP_MIN_LOG_LEVEL set (to ask for silence, as this suite does) used to let them through, twice.
    for env in ({}, {"TF_CPP_MIN_LOG_LEVEL": "2"}):
        err = stderr_of(**env)
        assert not TENSORFLOW_LINE.search(err), f"with {env}:\n{err}"
    if keras.backend.backend() == "tensorflow":  # JAX and torch print no such lines
        assert TENSORFLOW_LINE.search(stderr_of("-v")), "featpipe -v should show TensorFlow's start-up lines"
