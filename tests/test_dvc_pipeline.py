"""End to end: `dvc repro` on a copy of this repository, with tiny data and random weights.

The copy gets a folder of a few dozen small images made here and a params
file that keeps every stage to seconds; then the whole pipeline runs as a
user runs it (as the experiment that adds fine-tuning), a second `dvc repro`
must do nothing, a change to a param must dirty only the stages that read
it, and a change to the preprocessing code every stage after extract.

`dvc` and each stage's `featpipe` run as commands forked from a process that
has imported their libraries (tests/warm_commands.py), not as new interpreters.
"""

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.params import defaults

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"stripes": 0, "dots": 1, "plain": 2}

pytestmark = pytest.mark.slow


def _draw(kind, rng):
    image = np.full((32, 32, 3), 40, np.uint8) + rng.integers(0, 30, (32, 32, 3), dtype=np.uint8)
    if kind == "stripes":
        image[::4] = 230
    elif kind == "dots":
        image[::6, ::6] = 250
    return Image.fromarray(image)


def _image_folder(root, per_class=12):
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            _draw(kind, rng).save(root / kind / f"{i}.png")
    return root


def _tiny_params(images):
    # Every key at its default, not the checkout's params.yaml (which an experiment may have changed).
    params = defaults()
    params["seed"] = 0
    params["data"].update(source="folder", path=str(images), image_size=32, train_size=None, test_size=None, test_fraction=0.25)
    # MobileNetV2 runs about fifteen times as fast as VGG16 on a CPU; the stages don't care which.
    params["extract"].update(backbones=[{"name": "mobilenet_v2", "layer": "avg_pool"}], weights="none", batch_size=9)
    params["baseline"].update(n_estimators=10, n_jobs=1)
    params["train"]["rf"].update(n_estimators=10, n_jobs=1)
    params["train"]["dense"].update(epochs=3, hidden_units=[16])
    # The curves of the forest and the CNNs at one size, and two kinds of map: every other head, size and
    # method has the same inputs and outputs, and the tests of curves and explain run each of them.
    params["curves"].update(per_class=[4], repeats=1, classifiers=["rf"])
    params["explain"].update(per_class=1, methods=["occlusion", "grad_cam"], occlusion={"patch": 16, "stride": 16})
    params["scratch"].update(filters=[4], dense_units=8, epochs=2)
    # The head alone (unfreeze 0): the second phase is tests/test_finetune.py's; here it would double the
    # fine-tuning in both finetune and curves.
    params["finetune"].update(input_size=32, epochs=1, batch_size=9, unfreeze=0)
    return params


def _copy_repo(target):
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        source = REPO / name
        if source.is_file() and not name.startswith(("reports/", "data/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / "data").mkdir(exist_ok=True)
    git = ["git", "-c", "user.name=featpipe-test", "-c", "user.email=test@featpipe.invalid"]
    subprocess.run(git + ["init", "-q"], cwd=target, check=True)
    subprocess.run(git + ["add", "-A"], cwd=target, check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], cwd=target, check=True)


def _dvc(project, *args):
    """What ``dvc ARGS`` printed (stdout, then stderr), after checking it exited 0."""
    result = _run_dvc(project, *args)
    return result.stdout + result.stderr


@pytest.fixture(autouse=True)
def _warm_commands_first_on_path(warm_commands, monkeypatch):
    # `dvc` and the `featpipe` of every stage start in a second, not in ten (tests/warm_commands.py says how).
    monkeypatch.setenv("PATH", os.pathsep.join([str(warm_commands), str(Path(sys.executable).parent), os.environ["PATH"]]))


def _run_dvc(project, *args):
    # The copy's own code runs its stages, so that an edit there changes what they compute.
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(project))
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _stages_run(output):
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


def _assert_drawn_png(path, min_width=200, min_height=150):
    """``path`` is a PNG of a figure's size with something drawn on it: not blank, not one colour."""
    with Image.open(path) as image:
        kind, (width, height) = image.format, image.size
        colours = image.convert("RGB").getcolors(width * height)  # [(pixels, colour), ...]
    assert kind == "PNG", f"{path}: expected a PNG, got {kind}"
    assert min_width <= width <= 5000 and min_height <= height <= 5000, f"{path}: {width}x{height} px"
    drawn = 1 - max(colours)[0] / (width * height)  # the share of pixels not in the background colour
    # A matplotlib figure has hundreds of colours (anti-aliased text) and a tenth or more drawn on.
    assert len(colours) >= 16 and drawn >= 0.05, f"{path}: {len(colours)} colours, {drawn:.1%} of pixels drawn"


def _csv_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _assert_plots_show_draws(project, out, plot_csvs, plot_pngs):
    """`dvc plots show` writes an HTML page whose plots hold the rows of ``plot_csvs`` and the images ``plot_pngs``."""
    _dvc(project, "plots", "show", "-o", str(out))
    html = (out / "index.html").read_text()
    assert "<DVC_METRIC" not in html, "a template placeholder was left unfilled"
    # One vega-lite spec per CSV plot, in a div named after its path.
    specs = {plot_id: json.loads(spec) for spec, plot_id in re.findall(r"var spec = (.*?);\s*vegaEmbed\('#([^']+)'", html, re.S)}
    for path in plot_csvs:
        plot_id = re.sub(r"[/.]", "_", path)
        assert plot_id in specs, f"no plot of {path} in index.html; plots: {sorted(specs)}"
        shown = [{key: value for key, value in row.items() if key != "rev"} for row in specs[plot_id]["data"]["values"]]
        assert shown == _csv_rows(project / path), f"the plot of {path} does not hold the file's rows"
    images = {(out / source).read_bytes() for source in re.findall(r'<img src="([^"]+)"', html)}
    for path in plot_pngs:
        assert (project / path).read_bytes() in images, f"{path} is not among index.html's images"
    return specs


def _changed_stages(project, *targets):
    """The stages `dvc status` finds changed (deps, params or outs), without running any."""
    return sorted(json.loads(_run_dvc(project, "status", "--json", *targets).stdout))


def test_dvc_repro_runs_the_whole_pipeline_then_nothing(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _copy_repo(project)
    params = _tiny_params(_image_folder(tmp_path / "images"))
    # Three heads, not the default five: every train stage comes from the one matrix entry of dvc.yaml,
    # and tests/test_train.py runs each head's command.
    params["train"]["classifiers"] = ["rf", "svm", "dense"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    # The first run is an experiment that adds fine-tuning, as the README offers: it runs every stage.
    first = _dvc(project, "exp", "run", "-S", "finetune.backbones=[mobilenet_v2]")
    params["finetune"]["backbones"] = ["mobilenet_v2"]
    trains = [f"train@features0-{name}" for name in params["train"]["classifiers"]]
    assert _stages_run(first) == sorted(["prepare", "extract@0", "baseline", *trains, "scratch", "finetune@mobilenet_v2",
                                         "curves", "explain", "report"])
    report = (project / "reports" / "report.md").read_text()
    assert "random weights" in report[:400].lower()  # said at the top, before any number
    assert "## How many labels?" in report and "![Learning curves](curves/curves.png)" in report
    # The CNNs are on the curves by default, and the report says where each crosses the features.
    curves = json.loads((project / "reports" / "curves" / "curves.json").read_text())
    assert curves["models"]["scratch-cnn"]["cnn"] and curves["models"]["mobilenet_v2-finetune"]["cnn"]
    assert curves["crossover_sentence"] in report and curves["crossover_sentence"].startswith("WARNING: random weights")
    assert "| mobilenet_v2-avg_pool-svm | " in report and "embedding-mobilenet_v2-avg_pool.png" in report
    assert "## Where the models look" in report and "![Explanations of pixel_rf](explanations/pixel_rf.png)" in report
    models = ["pixel_rf", "scratch-cnn", "mobilenet_v2-finetune", *(f"mobilenet_v2-avg_pool-{name}" for name in params["train"]["classifiers"])]
    for model in models:
        assert model in report
        assert (project / "reports" / "metrics" / f"{model}.json").exists()
        assert (project / "reports" / "explanations" / f"{model}.png").exists()
    _assert_drawn_png(project / "reports" / "plots" / "accuracy.png")
    _assert_drawn_png(project / "reports" / "curves" / "curves.png")
    assert "accuracy" in _dvc(project, "metrics", "show")
    confusions = [f"reports/plots/{model}-confusion" for model in models]
    for confusion in confusions:
        _assert_drawn_png(project / f"{confusion}.png")
    specs = _assert_plots_show_draws(project, tmp_path / "plots", ["reports/curves/curves.csv"] + [f"{c}.csv" for c in confusions],
                                     [f"{c}.png" for c in confusions])
    assert specs["reports_curves_curves_csv"]["title"] == "How many labels?"  # the learning curve's custom template
    # The CNNs' training through DVCLive: each epoch in `dvc plots show`, the last one and the test accuracy
    # in `dvc metrics show` and `dvc exp show`.
    scratch = json.loads((project / "reports" / "metrics" / "scratch-cnn.json").read_text())
    epochs = specs["reports_dvclive_scratch-cnn_plots_metrics_loss_tsv"]["data"]["values"]
    assert len(epochs) == scratch["training"]["epochs_run"]
    live = json.loads(_run_dvc(project, "metrics", "show", "--json").stdout)[""]["data"]
    assert live["reports/dvclive/scratch-cnn/metrics.json"]["data"]["test_accuracy"] == scratch["accuracy"]
    assert "test_accuracy" in live["reports/dvclive/mobilenet_v2-finetune/metrics.json"]["data"]
    columns = _run_dvc(project, "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert any(column.endswith("test_accuracy") for column in columns), columns

    assert _stages_run(_dvc(project, "repro")) == []

    # A param change dirties the stages that read it, and only those (what follows them reruns when their outputs
    # change: DVC's own rule, seen below after the features change).
    _assert_a_change_dirties(project, params, ("train", "rf", "n_estimators", 12), ["curves", "train@features0-rf"])
    _assert_a_change_dirties(project, params, ("curves", "repeats", 2), ["curves"])
    # Without fine-tuning, its stage is gone and the stages that show its model must run again.
    _assert_a_change_dirties(project, params, ("finetune", "backbones", []), ["curves", "explain", "report"])

    # The resize and rescale are code, not params: editing them reruns extract, and then everything its
    # features feed is out of date (here through the resize's description, stored in the feature file).
    with open(project / "features" / "preprocessing.py", "a") as module:
        module.write('\nRESIZE_DESCRIPTION += " (edited)"\n')
    assert _stages_run(_dvc(project, "repro", "extract@0")) == ["extract@0"]
    assert _changed_stages(project) == sorted([*trains, "scratch", "finetune@mobilenet_v2", "curves", "explain"])


def _assert_a_change_dirties(project, params, change, expected):
    """Set ``params[section]...[key] = value`` in params.yaml: `dvc status` must name ``expected``; then undo it."""
    *keys, last, value = change
    section = params
    for key in keys:
        section = section[key]
    before, section[last] = section[last], value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert _changed_stages(project) == sorted(expected)
    finally:
        section[last] = before
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _save_model_file(path, seed):
    """A tiny CNN for 32x32 RGB images with an ``embedding`` layer, saved as ``.keras`` (weights drawn by ``seed``)."""
    from plumbing.backend import load_keras

    keras = load_keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    keras.Model(inputs, keras.layers.Dense(3)(x)).save(path)


def test_dvc_repro_with_a_keras_backbone_of_your_own(tmp_path):
    # Up to the features' first model: the stages after it are the same whatever the backbone
    # (tests/test_explain_cli.py runs them on a model-file backbone in this process).
    project = tmp_path / "project"
    project.mkdir()
    _copy_repo(project)
    _save_model_file(project / "models" / "tiny.keras", seed=0)
    params = _tiny_params(_image_folder(tmp_path / "images"))
    # extract.weights imagenet: a model file's own weights (random weights are refused for one).
    params["extract"].update(backbones=[{"name": "tiny", "layer": "embedding", "file": "models/tiny.keras"}], weights="imagenet")
    params["train"]["classifiers"] = ["rf"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    target = "train@features0-rf"
    assert _stages_run(_dvc(project, "repro", target)) == sorted(["prepare", "extract@0", target])
    features = project / "data" / "features" / "tiny-embedding.h5"
    with h5py.File(features, "r") as file:
        assert file.attrs["backbone"] == "models/tiny.keras" and file.attrs["weights"] == "model file"
    assert json.loads((project / "reports" / "metrics" / "tiny-embedding-rf.json").read_text())["backbone"] == "models/tiny.keras"
    assert _stages_run(_dvc(project, "repro", target)) == []

    # Leftovers of a killed run beside the features, and the models folder's README, are no deps (.dvcignore).
    (features.parent / "other-fc2.h5.partial").write_bytes(b"half")
    (features.parent / "other-fc2.h5.parts").mkdir()
    (features.parent / "other-fc2.h5.parts" / "identity.json").write_text("{}")
    (features.parent / "other-fc2.h5.lock").write_text("123\n")
    with open(project / "models" / "README.md", "a") as readme:
        readme.write("\nedited\n")
    assert _changed_stages(project, "--with-deps", target) == []

    # Another model in the same file: its extract is out of date (and, once rerun, what its features feed:
    # the whole-pipeline test above sees that after a preprocessing edit).
    _save_model_file(project / "models" / "tiny.keras", seed=1)
    assert _changed_stages(project, "--with-deps", target) == ["extract@0"]
