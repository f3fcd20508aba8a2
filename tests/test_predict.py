"""`featpipe predict` and `classifiers.load_model`: every kind of model, applied as it was trained.

One small project trains every kind of row the report has: the pixel forest,
svm and dense on MobileNetV2 features (random weights, 16x16 RGB images
resized to 224 inside the model), the scratch CNN and a MobileNetV2
fine-tuned at 32x32; a project of seconds adds rf (and svm) on a tiny .keras
backbone's features. Predicting the stored test split must give, row by
row, the predictions the training stages recorded, and so their accuracy;
and PNG files of the same images must predict alike.
"""

import csv
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.cli import cli, run
from plumbing.errors import FeatpipeError
from storage.image_store import ImageStore, write_image_store
from tests.conftest import CLASS_NAMES, built_once, invoke_ok, make_splits, tiny_backbone_project

PARAMS = {
    "seed": 5,
    "extract": {"backbones": [{"name": "mobilenet_v2", "layer": "avg_pool"}], "weights": "none", "batch_size": 8},
    "baseline": {"n_estimators": 10, "n_jobs": 1},
    # No rf: each prediction rebuilds MobileNetV2 at 224x224 (seconds), and how a forest is applied does not
    # depend on the backbone: small_project's .keras backbone has one. The svm is here for its votes: on these
    # random features the dense head (like the forest) predicts one class for every image.
    "train": {"classifiers": ["svm", "dense"], "dense": {"hidden_units": [8], "epochs": 3}},
    "scratch": {"filters": [4], "dense_units": 8, "epochs": 2, "augment": []},
    "finetune": {"backbones": ["mobilenet_v2"], "input_size": 32, "unfreeze": 0, "epochs": 1, "augment": [], "batch_size": 8},
}
MODELS = ["pixel_rf", "mobilenet_v2-avg_pool-svm", "mobilenet_v2-avg_pool-dense", "scratch-cnn", "mobilenet_v2-finetune"]


def refused(capsys, *args, before_any_work=True):
    """The error line of a ``featpipe`` command that must fail with exit code 2.

    Refused before any work, it is all of stderr; found while working (no
    file could be read), it is the last line, after the progress bar.
    """
    with pytest.raises(SystemExit) as exited:
        run(cli, [str(arg) for arg in args], prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("featpipe: error: ") == 1 and "Traceback" not in err, err
    last = err.splitlines()[-1]
    assert last.startswith("featpipe: error: ") and (err == last + "\n" or not before_any_work), err
    return last


def write_pngs(images, folder):
    """Each image as a PNG, named by its row, so that the folder's sorted order is the store's."""
    folder.mkdir(parents=True)
    for row, image in enumerate(images):
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(folder / f"{row:03d}.png")
    return folder


def train_every_kind(root):
    """Fill ``root`` with a project whose every kind of model is trained, and the test split as PNG files."""
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    write_image_store(root / "data/prepared/images.h5", make_splits(n_train=30, n_test=12, channels=3), source="tiny",
                      class_names=CLASS_NAMES, seed=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for stage in ("extract", "baseline", "train", "scratch"):
            invoke_ok(stage)
        invoke_ok("finetune", "--backbone", "mobilenet_v2")
    with ImageStore(root / "data/prepared/images.h5") as store:
        write_pngs(store.images("test"), root / "pngs")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project with every kind of model trained (read-only: built once for every worker), and the test split as PNG files."""
    root = built_once(tmp_path_factory, "predict-project", train_every_kind)
    with ImageStore(root / "data/prepared/images.h5") as store:
        images, labels = store.images("test"), store.labels("test")
    return types.SimpleNamespace(root=root, images=images, labels=labels, store=root / "data/prepared/images.h5")


@pytest.fixture
def project(trained, monkeypatch):
    monkeypatch.chdir(trained.root)
    return trained


@pytest.fixture(scope="module")
def plain_predictions(trained, tmp_path_factory):
    """``predicted(name, source)``: the CSV of ``featpipe predict`` of model ``name`` on ``source`` (the store or
    ``pngs``), run once per module: the Dask test compares with a CSV the every-kind test has made (seconds each)."""
    folder, written = tmp_path_factory.mktemp("predictions"), {}

    def predicted(name, source):
        if (name, source) not in written:
            out = folder / f"{name}-{len(written)}.csv"
            invoke_ok("predict", "--model", f"data/models/{name}", source, "--out", out)
            written[name, source] = out
        return written[name, source]

    return predicted


SMALL_PARAMS = {
    "seed": 2,
    "extract": {"backbones": [{"name": "tiny", "layer": "feat", "file": "models/tiny.keras"}], "batch_size": 8},
    "baseline": {"n_estimators": 10, "n_jobs": 1},
    "train": {"classifiers": ["rf", "svm"], "rf": {"n_estimators": 10, "n_jobs": 1}},
}
SMALL_MODELS = ["pixel_rf", "tiny-feat-rf", "tiny-feat-svm"]


@pytest.fixture(scope="module")
def small_project(tmp_path_factory):
    """A project of seconds: the pixel forest and a forest on a tiny .keras backbone's features (16x16 RGB images)."""
    root = tiny_backbone_project(tmp_path_factory.mktemp("small"), SMALL_PARAMS, dense={"feat": 8}, channels=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for stage in ("extract", "baseline", "train"):
            invoke_ok(stage)
    with ImageStore(root / "data/prepared/images.h5") as store:
        images = store.images("test")
    write_pngs(images, root / "pngs")
    return types.SimpleNamespace(root=root, images=images, store=root / "data/prepared/images.h5")


@pytest.fixture
def small(small_project, monkeypatch):
    monkeypatch.chdir(small_project.root)
    return small_project


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def recorded(name):
    """The stage's own ``actual, predicted`` rows of the test split, in order, and its metrics."""
    rows = read_csv(f"reports/plots/{name}-confusion.csv")
    return [row["actual"] for row in rows], [row["predicted"] for row in rows], json.loads(open(f"reports/metrics/{name}.json").read())


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_every_kind_of_model_predicts_the_stored_test_split_as_its_stage_recorded(project, plain_predictions, name):
    # rf on features: test_a_model_on_a_keras_file_backbone_predicts_as_its_stage_recorded[tiny-feat-rf].
    actual, expected, metrics = recorded(name)
    rows = read_csv(plain_predictions(name, project.store))
    with ImageStore(project.store) as store:
        assert [row["id"] for row in rows] == store.ids("test")
    predicted = [row["predicted"] for row in rows]
    assert predicted == expected  # row by row
    assert round(float(np.mean(np.array(predicted) == np.array(actual))), 6) == metrics["accuracy"]
    from_files = read_csv(plain_predictions(name, "pngs"))
    assert [row["path"] for row in from_files] == [f"pngs/{row:03d}.png" for row in range(len(rows))]
    assert [row["predicted"] for row in from_files] == expected


@pytest.mark.parametrize("name", SMALL_MODELS)
def test_a_model_on_a_keras_file_backbone_predicts_as_its_stage_recorded(small, name, tmp_path):
    # The quick version of the test above: a .keras backbone found at the path its feature file recorded.
    actual, expected, metrics = recorded(name)
    invoke_ok("predict", "--model", f"data/models/{name}", small.store, "--out", tmp_path / "store.csv")
    predicted = [row["predicted"] for row in read_csv(tmp_path / "store.csv")]
    assert predicted == expected
    assert round(float(np.mean(np.array(predicted) == np.array(actual))), 6) == metrics["accuracy"]
    invoke_ok("predict", "--model", f"data/models/{name}", "pngs", "--out", tmp_path / "pngs.csv")
    assert [row["predicted"] for row in read_csv(tmp_path / "pngs.csv")] == expected


def test_the_csv_has_a_column_per_class_that_says_what_its_scores_are(small, tmp_path):
    invoke_ok("predict", "--model", "data/models/tiny-feat-svm", small.store, "--out", tmp_path / "svm.csv")
    invoke_ok("predict", "--model", "data/models/pixel_rf", small.store, "--out", tmp_path / "rf.csv")
    with open(tmp_path / "svm.csv") as file:
        assert file.readline().strip() == "id,predicted," + ",".join(f"decision_value:{name}" for name in CLASS_NAMES) + ",reason"
    rows = read_csv(tmp_path / "rf.csv")
    assert list(rows[0]) == ["id", "predicted", *(f"probability:{name}" for name in CLASS_NAMES), "reason"]
    for row in rows:
        scores = [float(row[f"probability:{name}"]) for name in CLASS_NAMES]
        assert sum(scores) == pytest.approx(1, abs=1e-5) and row["reason"] == ""
        assert row["predicted"] == CLASS_NAMES[int(np.argmax(scores))]


def test_load_model_has_scikit_learn_manners(small):
    import classifiers

    svm = classifiers.load_model("data/models/tiny-feat-svm")
    forest = classifiers.load_model("data/models/pixel_rf")
    images = small.images
    assert isinstance(svm, classifiers.ImageClassifier) and not isinstance(svm, classifiers.KerasImageClassifier)
    assert not hasattr(svm, "predict_proba") and svm.decision_function(images).shape == (12, 3)
    with pytest.raises(AttributeError):
        svm.predict_proba(images)
    assert not hasattr(forest, "decision_function")
    probabilities = forest.predict_proba(images)
    assert probabilities.shape == (12, 3) and np.allclose(probabilities.sum(axis=1), 1)
    assert forest.classes_.tolist() == [0, 1, 2] and forest.class_names == CLASS_NAMES
    assert svm.image_shape == (16, 16, 3) and svm.record.model == "tiny-feat-svm" and svm.score_kind == "decision value"
    assert [CLASS_NAMES[label] for label in svm.predict(images)] == recorded("tiny-feat-svm")[1]  # the SVM's votes
    with pytest.raises(FeatpipeError, match=r"model pixel_rf takes 16x16x3 images \(its image store's: RGB\); got 16x16x1"):
        forest.predict(images[..., :1])


def test_predict_is_the_estimator_s_own_not_the_arg_max_of_its_scores():
    # An RBF SVC votes one-against-one; its one-against-rest decision values can rank a tied vote otherwise.
    from sklearn.svm import SVC

    from classifiers.image_model import pixel_model
    from classifiers.pixels import pixel_matrix

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (30, 4, 4, 1), dtype=np.uint8), np.arange(30) % 3
    svc = SVC(C=10.0).fit(pixel_matrix(images), labels)
    new = rng.integers(0, 256, (200, 4, 4, 1), dtype=np.uint8)
    votes, decisions = svc.predict(pixel_matrix(new)), svc.decision_function(pixel_matrix(new))
    assert (votes != decisions.argmax(axis=1)).any()  # the case this test is about
    model = pixel_model(svc, batch_size=64)
    np.testing.assert_array_equal(model.predict(new), votes)
    np.testing.assert_allclose(model.decision_function(new), decisions, rtol=1e-6)


def test_importing_classifiers_imports_no_keras():
    code = "import sys, classifiers; print(sorted(name for name in ('keras', 'tensorflow', 'jax') if name in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr[-2000:]


# --- bad model folders -------------------------------------------------------------------------


def broken_copy(project, tmp_path, name, change):
    """A copy of model ``name``'s folder with ``change(folder)`` applied."""
    folder = tmp_path / name
    shutil.copytree(project.root / "data/models" / name, folder)
    change(folder)
    return folder


def edit_card(**fields):
    def change(folder):
        card = json.loads((folder / "model.json").read_text())
        for key, value in fields.items():
            if value is None:
                card.pop(key)
            elif isinstance(value, dict):
                card[key] = {**card[key], **value}
            else:
                card[key] = value
        (folder / "model.json").write_text(json.dumps(card))

    return change


def vouched_model_file(name, data):
    """Write ``data`` as model file ``name`` and record its SHA-256 in the card: a damaged file the card vouches for."""
    def change(folder):
        (folder / name).write_bytes(data)
        edit_card(model_file=name, model_sha256=hashlib.sha256(data).hexdigest())(folder)

    return change


def append_a_byte(folder):
    with open(folder / "model.skops", "ab") as file:
        file.write(b"\0")


@pytest.mark.parametrize(
    "name, change, expected",
    [
        ("pixel_rf", lambda folder: shutil.rmtree(folder), "model folder {folder} not found"),
        ("pixel_rf", lambda folder: (folder / "model.json").write_text("{not json"),
         "{folder}/model.json is not valid JSON (damaged?); retrain it with the stage that made it"),
        ("pixel_rf", lambda folder: (folder / "model.json").unlink(), "model folder {folder} is missing or incomplete: it has no model.json"),
        ("pixel_rf", lambda folder: (folder / "model.skops").unlink(),
         "model folder {folder} is incomplete: model.skops is missing; retrain it with `featpipe baseline`"),
        ("pixel_rf", append_a_byte,
         "{folder}/model.skops is not the file that was trained: its SHA-256 differs from the one model.json records "
         "(changed or damaged after training); retrain it with `featpipe baseline`"),
        ("pixel_rf", vouched_model_file("model.skops", b"\x80\x04garbage"), "cannot load {folder}/model.skops: "),
        ("tiny-feat-rf", vouched_model_file("model.keras", b"PK\x03\x04 not a zip"), "cannot load {folder}/model.keras: "),
        ("tiny-feat-rf", edit_card(model_format=99, featpipe_version="9.0"),
         "{folder}/model.json was written by featpipe 9.0 in model format 99; this featpipe (0.1.0) reads model format 2 at most: upgrade featpipe"),
        ("tiny-feat-rf", edit_card(model_format=None),
         "{folder}/model.json was written before featpipe's model format 2 (it lacks what applying the model needs: the image shape, "
         "the backbone's settings); retrain it with `featpipe train`"),
        ("tiny-feat-rf", edit_card(model_format=1, model_sha256=None),
         "{folder}/model.json was written in model format 1, before featpipe recorded the model file's SHA-256 (format 2): "
         "nothing can tell whether the file is the one trained; retrain it with `featpipe train`"),
        ("pixel_rf", edit_card(model_sha256="not a digest"),
         "{folder}/model.json: 'model_sha256' must be 64 hex digits (the model file's SHA-256), got 'not a digest'"),
        ("pixel_rf", edit_card(images={"shape": [16, 16, 3], "channel_mode": "L"}),
         "{folder}/model.json: 'images.channel_mode' must be 'RGB' for 3 channel(s), got 'L'; retrain it with `featpipe baseline`"),
        ("pixel_rf", edit_card(output_labels=[0, 2, 1]), "{folder}/model.skops holds classes [0, 1, 2], model.json says classes [0, 2, 1]"),
    ],
    ids=["missing", "bad-json", "no-card", "no-model-file", "a-byte-appended", "damaged-skops", "damaged-keras", "newer",
         "before-format", "format-1", "bad-digest", "channel-mode", "other-classes"],
)
def test_a_bad_model_folder_is_one_line_and_nothing_is_written(small, tmp_path, capsys, name, change, expected):
    folder = broken_copy(small, tmp_path, name, change)
    err = refused(capsys, "predict", "--model", folder, small.store, "--out", tmp_path / "out.csv")
    assert expected.format(folder=folder) in err
    assert not (tmp_path / "out.csv").exists()


class _CreatesAFile:
    """Unpickling this creates ``path``: what a crafted model file could do on load."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


class _CreatesAFileWhenBuilt:
    """Building this from its state creates ``path``: what a crafted skops file could ask for."""

    def __init__(self, path):
        self.path = str(path)

    def __setstate__(self, state):
        open(state["path"], "w").close()


def _a_file_that_would_run_code(created):
    import skops.io

    return {
        "a pickle in place of the trained file": ("model.skops", pickle.dumps(_CreatesAFile(created)), False,
                                                   "model.skops is not the file that was trained"),
        "a pickle its card vouches for": ("model.joblib", pickle.dumps(_CreatesAFile(created)), True,
                                          "model.joblib is a pickle, which featpipe does not load (loading one can run "
                                          "any code in it); retrain it with `featpipe baseline` (it then writes model.skops)"),
        "a skops file of an untrusted type, vouched for": (
            "model.skops", skops.io.dumps(_CreatesAFileWhenBuilt(created)), True,
            "model.skops holds types featpipe does not load: tests.test_predict._CreatesAFileWhenBuilt (a featpipe model "
            "file holds scikit-learn and NumPy types only); nothing in it was run"),
    }


@pytest.mark.parametrize("case", ["a pickle in place of the trained file", "a pickle its card vouches for",
                                  "a skops file of an untrusted type, vouched for"])
def test_a_model_file_that_would_run_code_on_load_is_refused_and_runs_nothing(small, tmp_path, capsys, case):
    created = tmp_path / "created-on-load"
    name, data, vouched, expected = _a_file_that_would_run_code(created)[case]

    def plant(folder):
        (folder / "model.skops").unlink()
        if vouched:
            vouched_model_file(name, data)(folder)
        else:
            (folder / name).write_bytes(data)

    folder = broken_copy(small, tmp_path, "pixel_rf", plant)
    err = refused(capsys, "predict", "--model", folder, small.store, "--out", tmp_path / "out.csv")
    assert f"{folder}/{expected}" in err
    assert not created.exists() and not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        (edit_card(extractor={"weights_sha256": "0" * 64}),
         "the backbone's weights are not those the model was trained with: models/tiny.keras with weights model file has SHA-256 "),
        (edit_card(extractor={"backbone": "gone/tiny.keras"}), "(backbone gone/tiny.keras): model file not found: gone/tiny.keras"),
    ],
    ids=["other-file", "moved-file"],
)
def test_another_or_a_missing_backbone_file_is_refused(small, tmp_path, capsys, change, expected):
    folder = broken_copy(small, tmp_path, "tiny-feat-rf", change)
    err = refused(capsys, "predict", "--model", folder, "pngs", "--out", tmp_path / "out.csv")
    assert f"{folder}" in err and expected in err
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, expected",
    [
        (edit_card(extractor={"weights_sha256": "0" * 64}),
         "the backbone's weights are not those the model was trained with: mobilenet_v2 with weights none has SHA-256 "),
        # Random weights are identified by their draw: another seed draws others.
        (edit_card(extractor={"seed": 6}), "the model recorded "),
        (edit_card(extractor={"weights": "gone/mobilenet.weights.h5"}), "weights file not found: gone/mobilenet.weights.h5"),
        (edit_card(extractor={"layer": "fc2"}), "backbone mobilenet_v2 has no layer 'fc2'"),
    ],
    ids=["other-sha", "other-seed", "missing-weights-file", "other-layer"],
)
def test_other_or_missing_weights_are_never_swapped_in(project, tmp_path, capsys, change, expected):
    folder = broken_copy(project, tmp_path, "mobilenet_v2-avg_pool-svm", change)
    err = refused(capsys, "predict", "--model", folder, "pngs", "--out", tmp_path / "out.csv")
    assert f"{folder}" in err and expected in err
    assert not (tmp_path / "out.csv").exists()


def test_images_of_another_shape_or_channel_mode_are_refused(small, tmp_path, capsys):
    other = tmp_path / "gray.h5"
    write_image_store(other, make_splits(n_train=3, n_test=3, size=8, channels=1), source="tiny", class_names=CLASS_NAMES, seed=0)
    err = refused(capsys, "predict", "--model", "data/models/pixel_rf", other, "--out", tmp_path / "out.csv")
    assert "model pixel_rf was trained on 16x16x3 (RGB) images; " in err and "holds 8x8x1 (grayscale)" in err
    assert not (tmp_path / "out.csv").exists()
    err = refused(capsys, "predict", "--model", "data/models/pixel_rf", "--precision", "bfloat16", "pngs", "--out", tmp_path / "out.csv")
    assert "--precision applies to a feature model's backbone" in err


@pytest.mark.parametrize("count", ["0", "-2"])
def test_fewer_than_one_worker_is_refused(small, tmp_path, capsys, count):
    err = refused(capsys, "predict", "--model", "data/models/pixel_rf", "--workers", count, "pngs", "--out", tmp_path / "out.csv")
    assert err == f"featpipe: error: --workers: expected a number of local Dask worker processes, 1 or more, got {count}"
    assert not (tmp_path / "out.csv").exists()


# --- bad INPUT and --out -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda tmp: tmp / "nowhere", "INPUT {tmp}/nowhere not found"),
        (lambda tmp: (tmp / "empty" / ".hidden").mkdir(parents=True) or tmp / "empty", "no images in INPUT {tmp}/empty"),
        (lambda tmp: _broken_files(tmp / "broken"),
         "none of the 2 file(s) could be read as an image: {tmp}/broken/a.png (not an image Pillow can read); "
         "{tmp}/broken/b.jpg (empty file)"),
    ],
    ids=["missing", "no-files", "only-broken-files"],
)
def test_bad_input_is_one_line_and_nothing_is_written(small, tmp_path, capsys, make, expected):
    out = tmp_path / "new" / "out.csv"
    source = make(tmp_path)
    err = refused(capsys, "predict", "--model", "data/models/pixel_rf", source, "--out", out, before_any_work=source.name != "broken")
    assert expected.format(tmp=tmp_path) in err
    assert not (tmp_path / "new").exists()


def _broken_files(folder):
    folder.mkdir()
    (folder / "a.png").write_text("not a png")
    (folder / "b.jpg").write_bytes(b"")
    return folder


def test_unreadable_files_get_their_reason_and_the_others_their_prediction(small, tmp_path):
    mixed = shutil.copytree("pngs", tmp_path / "mixed")
    (mixed / "notes.txt").write_text("not an image")
    (mixed / ".DS_Store").write_bytes(b"hidden: skipped")
    (mixed / "sub").mkdir()
    Image.fromarray(small.images[0]).resize((40, 24)).save(mixed / "sub" / "wide.jpg")  # any size: decoded to 16x16
    result = invoke_ok("predict", "--model", "data/models/pixel_rf", mixed, "--out", tmp_path / "out.csv")
    rows = read_csv(tmp_path / "out.csv")
    assert len(rows) == 14 and [row["path"] for row in rows][-2:] == [f"{mixed}/notes.txt", f"{mixed}/sub/wide.jpg"]
    notes = rows[-2]
    assert notes["predicted"] == "" and notes["reason"] == "not an image Pillow can read"
    assert all(notes[f"probability:{name}"] == "" for name in CLASS_NAMES)
    assert rows[-1]["predicted"] in CLASS_NAMES and rows[-1]["reason"] == ""
    assert "unreadable  1 of 14 file(s)" in result.output and f"{mixed}/notes.txt: not an image Pillow can read" in result.output


def test_out_replaces_a_predictions_csv_and_refuses_anything_else(small, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    invoke_ok("predict", "--model", "data/models/pixel_rf", "pngs/000.png", "--out", out)
    invoke_ok("predict", "--model", "data/models/pixel_rf", "pngs", "--out", out)  # its own kind: replaced
    assert len(read_csv(out)) == 12
    foreign = tmp_path / "notes.csv"
    foreign.write_text("name,value\na,1\n")
    err = refused(capsys, "predict", "--model", "data/models/pixel_rf", "pngs", "--out", foreign)
    assert f"--out {foreign} exists and is not a predictions CSV" in err
    assert foreign.read_text() == "name,value\na,1\n"
    assert f"--out {tmp_path} is a folder" in refused(capsys, "predict", "--model", "data/models/pixel_rf", "pngs", "--out", tmp_path)
    err = refused(capsys, "predict", "--model", "data/models/pixel_rf", "pngs", "--out", foreign / "out.csv")
    assert f"cannot create output folder {foreign}: {foreign} is a file, not a folder" in err


CHECK_OUT_AS_A_USER = """
import os, sys
from pathlib import Path
from pipeline.predict import check_out
from plumbing.errors import FeatpipeError
import classifiers.predictions, classifiers.records  # imported before the privileges go
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)
try:
    check_out(Path(sys.argv[1]))
    print("accepted")
except FeatpipeError as error:
    print(error)
"""


def test_out_in_a_folder_nobody_may_write_to_is_refused():
    import tempfile

    locked = Path(tempfile.mkdtemp(prefix="featpipe-locked-"))
    try:
        locked.chmod(0o555)  # readable by anyone (the check runs as nobody when we are root), writable by none
        done = subprocess.run([sys.executable, "-c", CHECK_OUT_AS_A_USER, str(locked / "out.csv")], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1])
    finally:
        locked.chmod(0o700)
        shutil.rmtree(locked)
    assert done.stdout.strip() == f"cannot create output folder {locked}: no permission to write in {locked}", done.stderr[-2000:]


# --- decoding by prepare's rules ------------------------------------------------------------------


def test_files_are_decoded_into_the_model_s_channel_mode(tmp_path):
    from sources.decode import read_image

    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    Image.fromarray(colour[..., 0]).save(tmp_path / "gray.png")
    as_gray = read_image(tmp_path / "colour.png", 10, "L")
    # A colour file for a grayscale model: Pillow's luma first, then prepare's resize and crop, as a gray photo.
    expected = np.asarray(read_image_of(Image.fromarray(colour).convert("L"), tmp_path / "luma.png", 10))
    assert as_gray.shape == (10, 10, 1) and np.array_equal(as_gray[..., 0], expected)
    as_rgb = read_image(tmp_path / "gray.png", 10, "RGB")
    assert as_rgb.shape == (10, 10, 3) and np.array_equal(as_rgb, np.repeat(read_image(tmp_path / "gray.png", 10)[..., None], 3, 2))
    assert np.array_equal(read_image(tmp_path / "colour.png", 10, "RGB"), read_image(tmp_path / "colour.png", 10))


def read_image_of(image, path, size):
    from sources.decode import read_image

    image.save(path)
    return read_image(path, size)


# --- Dask ----------------------------------------------------------------------------------------


@pytest.fixture
def scheduler(dask_scheduler):
    """The test run's LocalCluster of 2 single-threaded worker processes (tests/conftest.py)."""
    return dask_scheduler


def test_scheduler_gives_the_csv_of_the_plain_run(small, tmp_path, scheduler):
    mixed = shutil.copytree("pngs", tmp_path / "mixed")
    (mixed / "broken.png").write_text("not a png")
    invoke_ok("predict", "--model", "data/models/pixel_rf", mixed, "--out", tmp_path / "plain.csv")
    invoke_ok("predict", "--model", "data/models/pixel_rf", mixed, "--scheduler", scheduler, "--out", tmp_path / "dask.csv")
    assert (tmp_path / "dask.csv").read_text() == (tmp_path / "plain.csv").read_text()


def test_results_are_handed_on_in_input_order_whatever_order_they_arrive():
    from classifiers.predictions import InOrder

    joined = InOrder(range(0, 50, 10))
    arrived = [(30, "d"), (10, "b"), (0, "a"), (40, "e"), (20, "c")]
    handed = [joined.add(start, result) for start, result in arrived]
    assert handed == [[], [], ["a", "b"], [], ["c", "d", "e"]] and not joined.waiting


def test_shards_on_dask_give_the_rows_of_the_plain_run(small, tmp_path, scheduler):
    from classifiers import load_model
    from classifiers.predictions import iter_distributed_file_predictions, iter_file_predictions
    from plumbing.cluster import dask_client

    paths = sorted((small.root / "pngs").glob("*.png")) + [small.root / "params.yaml"]
    model = load_model("data/models/pixel_rf", batch_size=4)
    plain = list(iter_file_predictions(model, paths, batch_size=4, workers=1))
    with dask_client(scheduler) as client:
        spread = list(iter_distributed_file_predictions(client, "data/models/pixel_rf", {"batch_size": 4}, paths, shard_files=3))
    assert len(spread) == 5  # 13 files in shards of 3
    assert [key for rows in spread for key in rows.keys] == [key for rows in plain for key in rows.keys]
    np.testing.assert_array_equal(np.concatenate([rows.labels for rows in spread]), np.concatenate([rows.labels for rows in plain]))
    np.testing.assert_array_equal(np.concatenate([rows.scores for rows in spread]), np.concatenate([rows.scores for rows in plain]))
    assert [reason for rows in spread for reason in rows.reasons][-1] == "not an image Pillow can read"


@pytest.mark.slow
def test_a_backbone_on_dask_workers_gives_the_csv_of_the_plain_run(project, plain_predictions, tmp_path, scheduler):
    # Each worker rebuilds MobileNetV2 (random weights, checked by their hash) once for all its shards.
    name = "mobilenet_v2-avg_pool-dense"
    invoke_ok("predict", "--model", f"data/models/{name}", "pngs", "--scheduler", scheduler, "--out", tmp_path / "dask.csv")
    assert (tmp_path / "dask.csv").read_text() == plain_predictions(name, "pngs").read_text()


def test_files_are_decoded_in_this_process_beside_a_forward_pass_on_the_cpu():
    from pipeline.predict import decoding_processes

    assert decoding_processes(3, None) == 3  # data.workers, when set, decides
    assert decoding_processes(None, "cpu:0") == 1  # the forward pass needs the cores
