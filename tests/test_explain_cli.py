"""`featpipe explain`: every trained model's maps on the same test images, and its refusals.

A whole small project: a tiny CNN saved as a model file is the backbone, so
extract, train and explain run as a user runs them, in seconds.
"""

import json
import shutil
import types

import h5py
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import cli, run
from tests.conftest import invoke_ok, tiny_backbone_project

FAST = {
    "seed": 3,
    "baseline": {"n_estimators": 10, "n_jobs": 1},
    "train": {
        "classifiers": ["rf", "svm", "dense"],
        "rf": {"n_estimators": 10, "n_jobs": 1},
        "dense": {"hidden_units": [8], "epochs": 3},
    },
    "scratch": {"filters": [4], "dense_units": 8, "epochs": 2, "augment": []},
    "explain": {"per_class": 1, "occlusion": {"patch": 4, "stride": 4}, "lime": {"samples": 12, "segments": 4}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project with an image store, a feature file from a tiny CNN, and every model trained."""
    params = {**FAST, "extract": {"backbones": [{"name": "tiny", "layer": "feat", "file": "models/tiny.keras"}],
                                  "batch_size": 8}}
    root = tiny_backbone_project(tmp_path_factory.mktemp("project"), params, dense={"feat": 16})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for stage in ("extract", "baseline", "train", "scratch"):
            invoke_ok(stage)
    return types.SimpleNamespace(root=root)


@pytest.fixture
def project(trained, monkeypatch):
    monkeypatch.chdir(trained.root)
    yield trained
    for path in (trained.root / "reports/explanations").glob("*"):
        path.unlink()


@pytest.fixture(scope="module")
def explained(trained, tmp_path_factory):
    """A copy of the project after `featpipe explain` and `featpipe report`, and explain's output.

    Each run takes seconds (a PNG grid per model), and the tests that read
    what they wrote share one; a copy, because the refusal tests need a
    project with no explanations in it.
    """
    root = shutil.copytree(trained.root, tmp_path_factory.mktemp("explained") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        output = invoke_ok("explain").output
        invoke_ok("report")
    return types.SimpleNamespace(root=root, output=output)


def test_every_model_gets_its_maps_on_the_same_images(explained):
    folder = explained.root / "reports/explanations"
    expected = {
        "pixel_rf": ["occlusion", "lime"],
        "tiny-feat-rf": ["occlusion", "lime"],
        "tiny-feat-svm": ["occlusion", "lime"],
        "tiny-feat-dense": ["occlusion", "lime", "grad_cam", "guided_backprop", "guided_grad_cam"],
        "scratch-cnn": ["occlusion", "lime", "grad_cam", "guided_backprop", "guided_grad_cam"],
    }
    ids = None
    for name, methods in expected.items():
        assert f"{name}: occlusion" in explained.output
        assert (folder / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        with h5py.File(folder / f"{name}.h5", "r") as file:  # an analyst with h5py alone
            assert list(file["maps"]) == sorted(methods)
            assert file["maps/occlusion"].shape == (3, 16, 16) and file["maps/occlusion"].dtype == "float32"
            assert file["labels"][:].tolist() == [0, 1, 2]
            ids = ids or file["ids"].asstr()[:].tolist()
            assert file["ids"].asstr()[:].tolist() == ids  # the same images for every model
            scores = "decision_values" if name.endswith("svm") else "probabilities"
            assert file[scores].shape == (3, 3) and file.attrs["model"] == name
            assert file.attrs["features"] == {"pixel_rf": "pixels", "scratch-cnn": "images"}.get(name, "tiny-feat")


def test_the_report_shows_the_best_feature_model_and_the_pixel_forest(explained):
    text = (explained.root / "reports/report.md").read_text()
    section = text[text.index("## Where the models look"):]
    assert "![Explanations of pixel_rf](explanations/pixel_rf.png)" in section
    assert section.count("![Explanations of tiny-feat-") == 1


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"explain": {**FAST["explain"], "methods": ["occlusion", "saliency"]}},
         "params: explain.methods: unknown explanation method 'saliency'; expected one of: occlusion, lime"),
        ({"explain": {**FAST["explain"], "occlusion": {"patch": 20, "stride": 4}}},
         "params: explain.occlusion.patch: expected at most the image size (16x16), got 20"),
        ({"explain": {**FAST["explain"], "occlusion": {"patch": 4, "stride": 5}}},
         "params: explain.occlusion.stride: expected at most the patch (4), got 5: a larger stride leaves pixels no patch covers"),
    ],
)
def test_bad_settings_are_one_line_and_nothing_is_written(project, capsys, change, expected):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    try:
        (project.root / "params.yaml").write_text(yaml.safe_dump({**params, **change}))
        assert_refused(project, capsys, expected)
    finally:
        (project.root / "params.yaml").write_text(yaml.safe_dump(params))


def assert_refused(project, capsys, expected):
    with pytest.raises(SystemExit) as exited:
        run(cli, ["explain"], prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and expected in err, err
    assert not list((project.root / "reports/explanations").glob("*"))


def test_a_missing_model_folder_or_one_from_another_store_is_refused(project, capsys):
    card = project.root / "data/models/tiny-feat-svm/model.json"
    original = card.read_text()
    try:
        card.write_text(json.dumps({**json.loads(original), "data": {"image_store_fingerprint": "another"}}))
        assert_refused(project, capsys, "data/models/tiny-feat-svm was trained on another image store")
        card.unlink()
        assert_refused(project, capsys, "model folder data/models/tiny-feat-svm is missing or incomplete: it has no model.json")
    finally:
        card.write_text(original)


def test_models_not_trained_yet_are_named_and_the_others_explained(project):
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    try:
        asked = {**params, "train": {**FAST["train"], "classifiers": ["rf", "knn"]}, "finetune": {"backbones": ["vgg16"]}}
        (project.root / "params.yaml").write_text(yaml.safe_dump(asked))
        result = CliRunner().invoke(cli, ["explain"], catch_exceptions=False)
    finally:
        (project.root / "params.yaml").write_text(yaml.safe_dump(params))
    assert result.exit_code == 0, result.output
    assert "not trained yet, so not explained: tiny-feat-knn (`featpipe train`), vgg16-finetune (`featpipe finetune`)" in result.stderr
    written = sorted(path.name for path in (project.root / "reports/explanations").glob("*.h5"))
    assert written == ["pixel_rf.h5", "scratch-cnn.h5", "tiny-feat-rf.h5"]


def test_grad_cam_through_a_flatten_layer_is_marked_in_the_file_and_the_report(explained):
    from explanations.caveats import read_caveats

    folder = explained.root / "reports/explanations"
    scratch = read_caveats(folder / "scratch-cnn.h5")
    assert sorted(scratch) == ["grad_cam", "guided_grad_cam"]
    assert "reads block1_relu through the Flatten layer flatten" in scratch["grad_cam"]
    assert read_caveats(folder / "tiny-feat-dense.h5") == {}  # global average pooling after its conv layer
    with h5py.File(folder / "scratch-cnn.h5", "r") as file:
        assert file["maps/grad_cam"].shape == (3, 16, 16)  # drawn and stored, not skipped
    text = (explained.root / "reports/report.md").read_text()
    assert "Grad-CAM and guided Grad-CAM of scratch-cnn are marked *" in text
