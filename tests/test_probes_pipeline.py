"""The probes through the whole pipeline: extract, train, curves, explain and report, as a user runs them.

A tiny CNN saved as a model file is the backbone, with two layers taken (two
feature files, as several layers of VGG16 give), so every stage runs in seconds.
"""

import json

import h5py
import numpy as np
import pytest

from classifiers.model_files import load_skops
from tests.conftest import CLASS_NAMES, invoke_ok, tiny_backbone_project

PARAMS = {
    "seed": 3,
    "baseline": {"n_estimators": 10, "n_jobs": 1},
    "train": {"classifiers": ["logreg", "knn"], "logreg": {"C": [0.1, 1.0], "cv": 2}, "knn": {"k": [1, 3], "cv": 2}},
    "scratch": {"filters": [4], "dense_units": 8, "epochs": 1, "augment": []},
    # No CNN on the curves: 5 CNN fits (30 s) that no test here reads; tests/test_dvc_pipeline.py runs the
    # stage with them, tests/test_curves_cnn.py checks their sentences.
    "curves": {"per_class": [2, 4, "all"], "repeats": 2, "cnn": False},
    "explain": {"per_class": 1, "methods": ["occlusion", "lime"], "occlusion": {"patch": 4, "stride": 4},
                "lime": {"samples": 12, "segments": 4}},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    backbones = [{"name": "tiny", "layer": layer, "file": "models/tiny.keras"} for layer in ("feat", "deep")]
    params = {**PARAMS, "extract": {"backbones": backbones, "batch_size": 8}}
    root = tiny_backbone_project(tmp_path_factory.mktemp("probes"), params, dense={"feat": 16, "deep": 8})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for layer in ("feat", "deep"):
            invoke_ok("extract", "--backbone", "tiny", "--layer", layer)
        for stage in ("baseline", "train", "scratch", "curves"):
            invoke_ok(stage)
        yield root


def test_train_records_what_cross_validation_chose_and_saves_a_plain_pipeline(project):
    for name, key, grid in (("logreg", "C", [0.1, 1.0]), ("knn", "k", [1, 3])):
        record = json.loads((project / f"reports/metrics/tiny-feat-{name}.json").read_text())
        assert record["classifier"] == name and record["training"]["cv"] == 2
        assert record["training"]["selected"][key] in grid
        assert set(record["training"]["cv_accuracy"]) == {str(value) for value in grid}
        card = json.loads((project / f"data/models/tiny-feat-{name}/model.json").read_text())
        model = load_skops(project / f"data/models/tiny-feat-{name}" / card["model_file"])
        with h5py.File(project / "data/features/tiny-feat.h5") as file:
            test = file["test"]["features"][:]
        predicted = [row.split(",")[1] for row in
                     (project / f"reports/plots/tiny-feat-{name}-confusion.csv").read_text().splitlines()[1:]]
        assert [CLASS_NAMES[label] for label in model.predict(test)] == predicted
        assert model.predict_proba(test).shape == (len(test), 3)


def test_explain_maps_the_probes_with_their_probabilities(project):
    result = invoke_ok("explain")
    for name in ("tiny-feat-logreg", "tiny-feat-knn"):
        assert f"{name}: occlusion" in result.output
        with h5py.File(project / f"reports/explanations/{name}.h5") as file:
            assert sorted(file["maps"]) == ["lime", "occlusion"]
            assert file["maps"]["occlusion"].shape == (3, 16, 16)
            assert np.isfinite(file["maps"]["lime"][:]).all()
            np.testing.assert_allclose(file["probabilities"][:].sum(axis=1), 1.0, rtol=1e-5)


def test_the_report_ranks_the_probes_and_compares_the_feature_files(project):
    invoke_ok("report")
    text = (project / "reports/report.md").read_text()
    rows = [line.split(" | ")[1] for line in text.splitlines() if line.startswith("| ") and line[2:3].isdigit()]
    assert {"tiny-feat-logreg", "tiny-feat-knn", "tiny-deep-logreg", "tiny-deep-knn", "pixel_rf", "scratch-cnn"} == set(rows)
    assert "| tiny-feat-knn | tiny.keras `feat` |" in text
    which = text[text.index("## Which features?"):].split("\n\n")[2].splitlines()
    assert which[0] == "| features | backbone, layer | dimensions | logreg | knn | best head |"
    assert [line.split(" | ")[:3] for line in which[2:]] == [["| tiny-feat", "tiny.keras `feat`", "16"],
                                                          ["| tiny-deep", "tiny.keras `deep`", "8"]]
    assert "".join(which).count("**") == 2
    curves = text[text.index("## How many labels?"):]
    assert "| model | 2 / class | 4 / class | all (24) |" in curves
    assert "Which features? The best head of each feature file" in curves
    assert "With the whole training split (24 images) the best feature model" in curves
