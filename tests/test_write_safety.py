"""Outputs appear whole or not at all: a full disk, two runs at once, an unfinished file under the final name.

Most `extract` runs here are the `extract` console script's own code run in
this process (exit code, stdout and stderr captured), which saves a
TensorFlow start-up per run. A real `extract` process is kept where the
process is the point: the first run on a full disk (a crash while HDF5 closes
a file at exit shows only as a signal or an ``Exception ignored`` line) and
the run that holds the lock while another is refused (the line must name the
other process's PID). The lock left by a killed process is held by a small
process that is killed, and `prepare` on a full disk is a real process too
(it starts in a second: no TensorFlow). The model is a tiny file whose
4,096-wide features fill a small disk quickly.
"""

import contextlib
import errno
import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from features import load_features
from plumbing.atomic import lock_path, partial_path
from storage.image_store import write_image_store
from tests.conftest import CLASS_NAMES, make_splits

REPO = Path(__file__).resolve().parents[1]
WIDE = 4096


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A small CNN for 16x16 grayscale images whose layer ``wide`` gives 4,096 features, saved as .keras."""
    from plumbing.backend import load_keras

    keras = load_keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(WIDE, activation="relu", name="wide")(x)
    path = tmp_path_factory.mktemp("model") / "wide.keras"
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """200 + 100 images: 300 rows of 4,096 floats, about 5 MB of features."""
    path = tmp_path_factory.mktemp("store") / "images.h5"
    write_image_store(path, make_splits(n_train=200, n_test=100), source="tiny", class_names=CLASS_NAMES, seed=0)
    return path


@pytest.fixture(scope="module")
def reference(store, wide_model, tmp_path_factory):
    """The features of an uninterrupted run on a roomy disk."""
    out = tmp_path_factory.mktemp("reference") / "f.h5"
    result = extract_here(store, out, wide_model)
    assert result.returncode == 0, result.stderr
    return {split: load_features(out, split).features for split in ("train", "test")}


def extract_args(store, out, model):
    # --params os.devnull: every default, whatever the checkout's params.yaml holds (an experiment's, say).
    return ["--backbone", str(model), "--layer", "wide", "--batch-size", "20",
            "--images", str(store), "--out", str(out), "--params", os.devnull]


def extract_command(store, out, model, *setup):
    """A new process running the `extract` console script, after the Python statements ``setup``."""
    script = "; ".join([*setup, "from pipeline.cli import extract_main", "import sys", "sys.argv[0] = 'extract'", "extract_main()"])
    return [sys.executable, "-c", script, *extract_args(store, out, model)]


def run_extract_process(store, out, model, *setup):
    return subprocess.run(extract_command(store, out, model, *setup), capture_output=True, text=True, timeout=300, cwd=REPO)


def extract_here(store, out, model):
    """The `extract` console script run in this process, as a CompletedProcess: its exit code, stdout and stderr."""
    from pipeline.cli import run
    from pipeline.extract import extract

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), no_logging_configured():
        try:  # what extract_main does, but for its sys.exit(run(...))
            code = run(extract, extract_args(store, out, model), prog_name="extract")
        except SystemExit as exited:
            code = exited.code
    return subprocess.CompletedProcess("extract", code, stdout.getvalue(), stderr.getvalue())


@contextlib.contextmanager
def no_logging_configured():
    """The root logger without handlers, as in a new `extract` process.

    The script configures no logging, so its warnings reach stderr through
    Python's last-resort handler; the handlers pytest puts on the root logger
    would take them instead.
    """
    root = logging.getLogger()
    kept = root.handlers[:]
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = kept


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("featpipe: error:")]


def assert_same_features(out, reference):
    for split, features in reference.items():
        np.testing.assert_array_equal(load_features(out, split).features, features)


@contextlib.contextmanager
def small_disk(folder, size="1m"):
    """A tmpfs of ``size`` mounted on ``folder``; ``grow(size)`` remounts it bigger. Skips where mounting isn't allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'}); the fake full disk test covers it")

    def grow(new_size):
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(folder)], check=True)

    try:
        yield grow
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_ends_in_one_line_and_the_rerun_after_freeing_space_resumes(store, wide_model, reference, tmp_path):
    with small_disk(tmp_path / "disk", "1m") as grow:
        out = tmp_path / "disk" / "f.h5"
        # A real process: a crash at its exit (HDF5 closing a file it could not write) shows only there.
        full = run_extract_process(store, out, wide_model)
        assert full.returncode == 2, f"rc {full.returncode}: {full.stderr}"  # not 0, not a crash (-11 / 139)
        assert error_lines(full.stderr) == [
            f"featpipe: error: no space left on device writing {partial_path(out)}; free space and rerun to resume"
        ]
        assert "Traceback" not in full.stderr and "Exception ignored" not in full.stderr
        assert not out.exists() and partial_path(out).exists() and not lock_path(out).exists()
        grow("64m")
        rerun = extract_here(store, out, wide_model)
        assert rerun.returncode == 0, rerun.stderr
        assert_same_features(out, reference)


def test_a_write_error_at_a_chosen_row_keeps_the_partial_and_the_rerun_gives_the_same_numbers(
    store, wide_model, reference, tmp_path, monkeypatch
):
    from storage import chunkio

    out = tmp_path / "f.h5"
    real_write_oldest = chunkio.ChunkWriter._write_oldest

    def disk_full_after_the_first_chunk(writer):  # a chunk is 64 rows of 4,096 floats
        if writer._in_flight[0][0] >= 64:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_oldest(writer)

    monkeypatch.setattr(chunkio.ChunkWriter, "_write_oldest", disk_full_after_the_first_chunk)
    full = extract_here(store, out, wide_model)
    monkeypatch.undo()
    assert full.returncode == 2, full.stderr
    assert error_lines(full.stderr) == [
        f"featpipe: error: no space left on device writing {partial_path(out)}; free space and rerun to resume"
    ]
    assert not out.exists()
    with h5py.File(partial_path(out), "r") as partial:
        assert partial["train"].attrs["rows_written"] == 64 and partial.attrs["complete"] == False  # noqa: E712
    rerun = extract_here(store, out, wide_model)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed" in rerun.stdout
    assert_same_features(out, reference)


@contextlib.contextmanager
def child_process(command, **options):
    """``subprocess.Popen(command, **options)``, killed and waited for however the test ends.

    A failed assert must not leave a child behind: one holds a lock and
    sleeps for ten minutes, another waits for a file that never comes.
    """
    process = subprocess.Popen(command, **options)
    try:
        yield process
    finally:
        process.kill()  # does nothing if it has already been waited for
        process.wait()
        for pipe in (process.stdout, process.stderr):
            if pipe:
                pipe.close()


def wait_for(path, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_of_two_runs_at_once_one_writes_the_file_and_the_other_refuses(store, wide_model, reference, tmp_path):
    out, go = tmp_path / "f.h5", tmp_path / "go"
    # The first run, a process of its own, holds on before finishing until told: the second, run here,
    # surely meets it at work, and must name that other process.
    held = (
        "import pathlib, time; from storage import feature_store; real = feature_store.FeatureWriter.finish",
        f"feature_store.FeatureWriter.finish = lambda self: ([time.sleep(0.05) for _ in iter(lambda: pathlib.Path({str(go)!r}).exists(), True)], real(self))",
    )
    with child_process(extract_command(store, out, wide_model, *held), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, cwd=REPO) as first:
        wait_for(lock_path(out), first)
        second = extract_here(store, out, wide_model)
        assert second.returncode == 2, second.stderr
        assert error_lines(second.stderr) == [
            f"featpipe: error: another process (PID {first.pid}) is writing {out}; wait for it to finish (or stop it), then rerun"
        ]
        go.touch()
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 0, stderr
    assert_same_features(out, reference)
    assert not lock_path(out).exists() and not partial_path(out).exists()


def test_a_lock_left_by_a_killed_process_does_not_block(store, wide_model, reference, tmp_path):
    out = tmp_path / "f.h5"
    with child_process(
        [sys.executable, "-c", "import sys, time; from plumbing.atomic import exclusive_output; "
         "held = exclusive_output(sys.argv[1]); held.__enter__(); print('held', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    ) as holder:
        assert holder.stdout.readline().strip() == "held"
        refused = extract_here(store, out, wide_model)
        assert f"another process (PID {holder.pid}) is writing" in refused.stderr and refused.returncode == 2
        holder.kill()  # SIGKILL: no cleanup runs, but the operating system drops the lock
        holder.wait()
    assert extract_here(store, out, wide_model).returncode == 0
    assert_same_features(out, reference)


def test_an_unfinished_file_under_the_final_name_is_extracted_again(store, wide_model, reference, tmp_path):
    out = tmp_path / "f.h5"
    assert extract_here(store, out, wide_model).returncode == 0
    with h5py.File(out, "a") as file:  # what an older featpipe could leave after two runs at once
        file.attrs["complete"] = False
        file["test/features"][:] = 0
    rerun = extract_here(store, out, wide_model)
    assert rerun.returncode == 0, rerun.stderr
    assert "is unfinished (complete=False); extracting it again" in rerun.stderr
    assert_same_features(out, reference)


def test_prepare_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for index in range(60):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "photos" / name / f"{index}.png")
    with small_disk(tmp_path / "disk", "256k"):
        out = tmp_path / "disk" / "images.h5"
        result = subprocess.run(
            [sys.executable, "-c", "from pipeline.cli import main; main()", "prepare", "--source", "folder",
             "--path", str(tmp_path / "photos"), "--out", str(out), "--params", os.devnull],
            capture_output=True, text=True, timeout=300, cwd=REPO,
        )
        assert result.returncode == 2, f"rc {result.returncode}: {result.stderr}"
        assert error_lines(result.stderr) == [
            f"featpipe: error: no space left on device writing {partial_path(out)}; free space and rerun"
        ]
        assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
        assert sorted(path.name for path in out.parent.iterdir()) == []
