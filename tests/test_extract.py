"""`extract` end to end on tiny stores: the file, resuming, refusing, and the CLI's errors.

Commands run in this process. The separate processes are the `extract` run
killed with SIGKILL, and the Dask workers that ``--workers`` starts.
"""

import json
import os
import signal
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from features import load_features, read_metadata
from plumbing.atomic import partial_path
from plumbing.errors import FeatpipeError
from storage.image_store import ImageStore, write_image_store

from tests.conftest import CLASS_NAMES, make_splits, offline_keras_env


@pytest.fixture(scope="module")
def extractor():
    """MobileNetV2 with seeded random weights, batches of 4: 18 tiny images in 5 batches."""
    from features.engine import FeatureExtractor

    return FeatureExtractor("mobilenet_v2", weights="none", batch_size=4, seed=42).fit()


@pytest.fixture(scope="module")
def expected(extractor, tmp_path_factory):
    """Features of the tiny store computed directly, to compare files against."""
    path = tmp_path_factory.mktemp("store") / "images.h5"
    write_image_store(path, make_splits(), source="tiny", class_names=CLASS_NAMES, seed=0)
    with ImageStore(path) as store:
        return {split: extractor.transform(store.images(split)) for split in ("train", "test")}


def extract(store, out, extractor, **options):
    from features.engine import extract_features

    return extract_features(store, out, extractor, progress=False, **options)


def test_extract_writes_a_self_contained_feature_file(tiny_image_store, tmp_path, extractor, expected):
    out = tmp_path / "features" / "mobilenet_v2-avg_pool.h5"
    summary = extract(tiny_image_store, out, extractor)
    assert summary["rows"] == {"train": 12, "test": 6} and summary["rows_computed"] == 18
    assert summary["feature_dim"] == 1280 and summary["random_weights"] and not summary["skipped_because_complete"]
    assert out.exists() and not partial_path(out).exists()
    for split in ("train", "test"):
        loaded = load_features(out, split)
        np.testing.assert_array_equal(loaded.features, expected[split])
        assert loaded.labels.tolist() == [i % 3 for i in range(len(expected[split]))]
        assert loaded.ids[0] == f"tiny-{split}:0" and loaded.class_names == CLASS_NAMES


def test_the_file_says_how_it_was_made(tiny_image_store, tmp_path, extractor):
    out = tmp_path / "f.h5"
    extract(tiny_image_store, out, extractor)
    attrs = read_metadata(out)
    with ImageStore(tiny_image_store) as store:
        fingerprint = store.fingerprint
    assert attrs["backbone"] == "mobilenet_v2" and attrs["layer"] == "avg_pool" and attrs["feature_dim"] == 1280
    assert attrs["input_size"] == [224, 224] and attrs["preprocessing"].startswith("tf:")
    assert attrs["resize_method"].startswith("bilinear") and attrs["color"] == "grayscale repeated to 3 channels"
    assert attrs["weights"] == "none" and len(attrs["weights_sha256"]) == 64 and attrs["precision"] == "float32"
    assert attrs["image_store_fingerprint"] == fingerprint and attrs["class_names"] == CLASS_NAMES
    assert attrs["splits"] == ["train", "test"] and attrs["complete"] is True
    assert set(json.loads(attrs["versions"])) == {"featpipe", "keras", "backend", "h5py", "numpy"}
    with h5py.File(out, "r") as file:  # an analyst with h5py alone
        assert file["train/features"].dtype == np.float32 and file["train/features"].shape == (12, 1280)
        assert file["test/labels"].shape == (6,) and file["test/ids"].asstr()[0] == "tiny-test:0"


def test_a_complete_file_is_skipped_and_other_settings_are_refused_unless_overwrite(tiny_image_store, tmp_path, extractor):
    from features.engine import FeatureExtractor

    out = tmp_path / "f.h5"
    extract(tiny_image_store, out, extractor)
    again = extract(tiny_image_store, out, extractor)
    assert again["skipped_because_complete"] and again["rows_computed"] == 0
    other_seed = FeatureExtractor("mobilenet_v2", weights="none", batch_size=4, seed=7)
    with pytest.raises(FeatpipeError, match="exists with weights_sha256=.*pass --overwrite to replace it"):
        extract(tiny_image_store, out, other_seed)
    replaced = extract(tiny_image_store, out, other_seed, overwrite=True)
    assert replaced["rows_computed"] == 18
    assert read_metadata(out)["weights_sha256"] == other_seed.weights_sha256_


@pytest.fixture
def chunks_of_4_rows(monkeypatch):
    """Feature files chunked by 4 rows (of 1280 floats), so that 12 rows take 3 appends."""
    from storage import feature_store

    monkeypatch.setattr(feature_store, "CHUNK_BYTES", 4 * 1280 * 4)


def test_a_crash_mid_write_resumes_to_the_same_numbers(tiny_image_store, tmp_path, extractor, expected, monkeypatch, chunks_of_4_rows):
    from storage.feature_store import FeatureWriter

    out = tmp_path / "f.h5"
    real_append, taken = FeatureWriter.append, []

    def crash_at_train_row_8(writer, split, rows):
        if split == "train" and sum(taken) + len(rows) > 8:
            raise RuntimeError("simulated crash")
        taken.append(len(rows) if split == "train" else 0)
        real_append(writer, split, rows)

    monkeypatch.setattr(FeatureWriter, "append", crash_at_train_row_8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract(tiny_image_store, out, extractor)
    monkeypatch.setattr(FeatureWriter, "append", real_append)
    assert not out.exists()
    with h5py.File(partial_path(out), "r") as partial:
        written = partial["train"].attrs["rows_written"]
        assert written <= 8 and written % 4 == 0 and partial["test"].attrs["rows_written"] == 0
    resumed = extract(tiny_image_store, out, extractor)
    assert resumed["rows_computed"] == 18 - written
    for split in ("train", "test"):
        np.testing.assert_array_equal(load_features(out, split).features, expected[split])


def test_ctrl_c_between_batches_leaves_a_partial_that_resumes(tiny_image_store, tmp_path, extractor, expected, monkeypatch):
    out = tmp_path / "f.h5"
    real_launch, launched = type(extractor)._launch, []

    def interrupted(self, images):
        launched.append(images)
        if len(launched) == 4:  # the first test batch
            raise KeyboardInterrupt
        return real_launch(self, images)

    monkeypatch.setattr(type(extractor), "_launch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(tiny_image_store, out, extractor)
    monkeypatch.undo()
    assert partial_path(out).exists() and not out.exists()
    assert extract(tiny_image_store, out, extractor)["rows_computed"] == 6
    np.testing.assert_array_equal(load_features(out, "test").features, expected["test"])


def test_one_split_makes_a_file_of_that_split_alone(tiny_image_store, tmp_path, extractor, expected):
    out = tmp_path / "train-only.h5"
    summary = extract(tiny_image_store, out, extractor, splits=["train"])
    assert summary["rows"] == {"train": 12}
    with h5py.File(out, "r") as file:
        assert set(file) == {"train"} and json.loads(json.dumps(list(file.attrs["splits"]))) == ["train"]
    np.testing.assert_array_equal(load_features(out, "train").features, expected["train"])
    with pytest.raises(FeatpipeError, match="splits"):
        extract(tiny_image_store, out, extractor)  # both splits asked of a train-only file


# --- the command line --------------------------------------------------------------------


def run_cli(args, capsys):
    """Run `featpipe ARGS` in this process; (exit code, stdout, stderr)."""
    from pipeline.cli import cli, run

    try:
        code = run(cli, args)
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("featpipe: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_params(folder, **extract_section):
    (folder / "params.yaml").write_text(json.dumps({"extract": extract_section}))


def test_extract_command_makes_every_configured_backbone(in_tmp_project, tiny_image_store, capsys):
    write_params(in_tmp_project, backbones=[{"name": "mobilenet_v2", "layer": "avg_pool"}], weights="none", batch_size=6)
    code, out, err = run_cli(["extract"], capsys)
    assert code == 0, err
    made = in_tmp_project / "data" / "features" / "mobilenet_v2-avg_pool.h5"
    assert made.exists() and f"wrote {made.relative_to(in_tmp_project)}" in out
    assert "rows        18 (train 12, test 6)" in out and "1280 float32" in out and "images/s" in out
    assert "WARNING: random weights (--weights none)" in out and "WARNING: random weights" in err
    code, out, _ = run_cli(["extract"], capsys)
    assert code == 0 and "up to date" in out
    code, out, _ = run_cli(["extract", "--backbone", "mobilenet_v2", "--split", "test"], capsys)
    assert code == 0 and (made.parent / "mobilenet_v2-avg_pool-test.h5").exists()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--backbone", "alexnet"], ["unknown backbone 'alexnet'; expected one of: densenet121"]),
        (["--backbone", "vgg16", "--layer", "fc7"], ["no layer 'fc7'; expected one of: fc1 (4096), fc2 (4096), avg_pool (512)"]),
        (["--backbone", "vgg16", "--images", "nowhere.h5"], ["image store not found: nowhere.h5"]),
        (["--backbone", "vgg16", "--weights", "missing.weights.h5"], ["weights file not found: missing.weights.h5"]),
        (["--backbone", "vgg16", "--precision", "float8"], ["extract.precision", "float8"]),
        (["--backbone", "vgg16", "--batch-size", "0"], ["extract.batch_size", "got 0"]),
        (["--layer", "fc1"], ["--layer and --out need --backbone"]),
        (["--backbone", "missing.keras", "--layer", "x"], ["model file not found: missing.keras"]),
    ],
)
def test_user_mistakes_end_in_one_line_and_exit_2(in_tmp_project, tiny_image_store, capsys, args, fragments):
    code, _, err = run_cli(["extract", "--images", str(tiny_image_store)] + args, capsys)
    assert_one_line_error(code, err, *fragments)


def test_a_store_of_the_wrong_shape_is_refused(in_tmp_project, capsys):
    with h5py.File(in_tmp_project / "bad.h5", "w") as file:
        for split in ("train", "test"):
            group = file.create_group(split)
            group["images"] = np.zeros((2, 4, 4), np.float32)
            group["labels"], group["ids"] = np.zeros(2, int), np.array([b"a", b"b"])
        file.attrs["fingerprint"] = "x"
    code, _, err = run_cli(["extract", "--backbone", "mobilenet_v2", "--weights", "none", "--images", "bad.h5"], capsys)
    assert_one_line_error(code, err, "must be uint8 [N, H, W, 1|3], got float32 (2, 4, 4)")


def test_imagenet_offline_says_which_file_to_put_where(in_tmp_project, tiny_image_store, tmp_path, capsys, monkeypatch):
    an_empty_keras_cache_and_no_network(monkeypatch, tmp_path / "empty-keras-home")
    args = ["extract", "--backbone", "mobilenet_v2", "--weights", "imagenet", "--images", str(tiny_image_store)]
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(
        code, err, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", "empty-keras-home/models/", "--weights PATH",
    )
    assert not (in_tmp_project / "data" / "features").exists()


def an_empty_keras_cache_and_no_network(monkeypatch, keras_home):
    """In this process, what ``conftest.offline_keras_env`` gives a new one: an empty Keras home, downloads failing at once.

    Keras reads ``KERAS_HOME`` once, when imported, so its copy is set too;
    urllib keeps the opener (and the proxies) of its first download, so it is
    dropped. tests/test_backbones.py checks the same message in a new process.
    """
    import urllib.request

    from keras.src.backend import config as keras_config

    for name, value in offline_keras_env(keras_home).items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(keras_home))
    monkeypatch.setattr(urllib.request, "_opener", None)


def test_settings_that_differ_from_the_finished_file_are_refused(in_tmp_project, tiny_image_store, capsys):
    base = ["extract", "--backbone", "mobilenet_v2", "--weights", "none", "--batch-size", "6", "--images", str(tiny_image_store)]
    assert run_cli(base, capsys)[0] == 0
    code, _, err = run_cli(base + ["--precision", "bfloat16"], capsys)
    assert_one_line_error(code, err, "precision='float32'", "'bfloat16'", "pass --overwrite")
    code, out, _ = run_cli(base + ["--precision", "bfloat16", "--overwrite"], capsys)
    assert code == 0 and "computed in bfloat16" in out


@pytest.fixture
def model_file(tmp_path):
    """A small user CNN for 16x16 grayscale images, saved as .keras."""
    from plumbing.backend import load_keras

    keras = load_keras()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(3, name="logits")(x)
    path = tmp_path / "tiny_cnn.keras"
    keras.Model(inputs, outputs).save(path)
    return path


def test_a_users_model_file_with_a_layer(in_tmp_project, tiny_image_store, model_file, capsys):
    args = ["extract", "--backbone", str(model_file), "--images", str(tiny_image_store)]
    code, out, err = run_cli(args + ["--layer", "conv"], capsys)
    assert code == 0, err
    made = in_tmp_project / "data" / "features" / "tiny_cnn-conv.h5"
    features = load_features(made, "train")
    assert features.features.shape == (12, 8)  # the 14x14x8 conv output, averaged over positions
    assert features.metadata["weights"] == "model file" and features.metadata["preprocessing"].startswith("none")
    code, _, err = run_cli(args + ["--layer", "dense"], capsys)
    assert_one_line_error(code, err, "no layer 'dense'; expected one of:", "conv, pool, logits")
    model_file.write_bytes(b"not a zip")
    code, _, err = run_cli(args + ["--layer", "conv"], capsys)
    assert_one_line_error(code, err, f"cannot load model file {model_file}")


def test_a_model_file_entry_goes_by_its_name_with_or_without_backbone(in_tmp_project, tiny_image_store, model_file, capsys):
    # dvc.yaml runs `featpipe extract --backbone ${item.name} --layer ${item.layer}` and declares
    # data/features/${item.name}-${item.layer}.h5: the entry's name, not the file's stem, names the file.
    (in_tmp_project / "models").mkdir()
    shutil.copy(model_file, in_tmp_project / "models" / "tiny_cnn.keras")
    write_params(in_tmp_project, backbones=[{"name": "mine", "layer": "conv", "file": "models/tiny_cnn.keras"},
                                            {"name": "mine", "layer": "pool", "file": "models/tiny_cnn.keras"}])
    features = in_tmp_project / "data" / "features"
    code, out, err = run_cli(["extract", "--backbone", "mine", "--layer", "conv", "--images", str(tiny_image_store)], capsys)
    assert code == 0, err
    assert sorted(path.name for path in features.iterdir()) == ["mine-conv.h5"]
    # The file's backbone attribute stays the path as given; its numbers are the model file's.
    made = load_features(features / "mine-conv.h5", "train")
    assert made.metadata["backbone"] == "models/tiny_cnn.keras" and made.metadata["weights"] == "model file"
    code, out, err = run_cli(["extract", "--images", str(tiny_image_store)], capsys)
    assert code == 0, err
    assert sorted(path.name for path in features.iterdir()) == ["mine-conv.h5", "mine-pool.h5"]
    assert "up to date: data/features/mine-conv.h5" in out
    code, _, err = run_cli(["extract", "--backbone", "mine", "--images", str(tiny_image_store)], capsys)
    assert_one_line_error(code, err, "--backbone mine has 2 layers in extract.backbones (conv, pool); say which with --layer")


def test_name_and_file_on_the_command_line_as_dvc_passes_an_entry(in_tmp_project, tiny_image_store, model_file, capsys):
    args = ["extract", "--file", str(model_file), "--layer", "conv", "--images", str(tiny_image_store)]
    code, _, err = run_cli(args + ["--name", "mine"], capsys)
    assert code == 0, err
    code, _, err = run_cli(args, capsys)  # without --name: the file's stem
    assert code == 0, err
    assert sorted(path.name for path in (in_tmp_project / "data" / "features").iterdir()) == ["mine-conv.h5", "tiny_cnn-conv.h5"]
    code, _, err = run_cli(args + ["--name", "vgg16"], capsys)
    assert_one_line_error(code, err, "--name: expected a name of your own", "not a registry backbone's", "got 'vgg16'")


def test_a_model_file_entry_may_not_take_a_registry_name(in_tmp_project, tiny_image_store, capsys):
    write_params(in_tmp_project, backbones=[{"name": "vgg16", "layer": "conv", "file": "models/tiny_cnn.keras"}])
    code, _, err = run_cli(["extract", "--backbone", "vgg16", "--images", str(tiny_image_store)], capsys)
    assert_one_line_error(code, err, "params: extract.backbones[0].name: 'vgg16' is a registry backbone; "
                                     "give models/tiny_cnn.keras a name of its own")


@pytest.mark.slow
def test_kill_9_half_way_then_rerun_gives_the_uninterrupted_numbers(in_tmp_project, extractor, chunks_of_4_rows, capsys):
    """The real thing: a separate `extract` process, SIGKILLed mid-run, then run again (here)."""
    store = in_tmp_project / "images.h5"
    write_image_store(store, make_splits(n_train=40, n_test=8), source="tiny", class_names=CLASS_NAMES, seed=0)
    out = in_tmp_project / "killed.h5"
    args = ["--backbone", "mobilenet_v2", "--weights", "none", "--batch-size", "4", "--images", str(store), "--out", str(out)]
    # The `extract` console script, with feature files chunked by 4 rows (as chunks_of_4_rows does here) so
    # that rows reach the disk every batch (the default chunk is 204 rows here).
    script = (
        "import sys; from storage import feature_store; feature_store.CHUNK_BYTES = 4 * 1280 * 4; "
        "from pipeline.cli import extract_main; sys.argv[0] = 'extract'; extract_main()"
    )
    victim = subprocess.Popen([sys.executable, "-c", script, *args], cwd=in_tmp_project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        written = wait_for_rows(partial_path(out), at_least=8, process=victim)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert 8 <= written < 40 and not out.exists()
    code, stdout, stderr = run_cli(["extract", *args], capsys)
    assert code == 0, stderr
    assert "resumed" in stdout
    # ``extractor`` has the settings the command line asks for: mobilenet_v2, random weights of seed 42, batches of 4.
    with ImageStore(store) as images:
        for split in ("train", "test"):
            np.testing.assert_array_equal(load_features(out, split).features, extractor.transform(images.images(split)))


def wait_for_rows(partial, at_least, process, timeout=240):
    """Rows written so far to a ``.partial`` another process is writing, once there are ``at_least``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "extract finished before it could be killed"
        try:
            with h5py.File(partial, "r", locking=False) as file:
                rows = int(file["train"].attrs["rows_written"])
        except (OSError, KeyError, RuntimeError):  # caught mid-write
            rows = 0
        if rows >= at_least:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} rows in {partial} after {timeout} s")


def test_workers_hand_the_work_to_a_dask_cluster_with_the_same_numbers(in_tmp_project, tiny_image_store, model_file, capsys):
    base = ["extract", "--backbone", str(model_file), "--layer", "conv", "--batch-size", "4", "--images", str(tiny_image_store)]
    code, out, err = run_cli(base + ["--out", "plain.h5"], capsys)
    assert code == 0, err
    code, out, err = run_cli(base + ["--out", "dask.h5", "--workers", "1", "--shard-size", "8"], capsys)
    assert code == 0, err
    assert "Dask: 1 worker(s)" in err and "rows        18 (train 12, test 6)" in out
    for split in ("train", "test"):
        np.testing.assert_array_equal(load_features("dask.h5", split).features, load_features("plain.h5", split).features)
    code, _, err = run_cli(base + ["--workers", "1", "--split", "train"], capsys)
    assert_one_line_error(code, err, "--split works in this process only")
