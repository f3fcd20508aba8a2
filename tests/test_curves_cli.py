"""`featpipe curves`: learning curves from the extracted features and the image store, and its refusals."""

import csv
import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli, run
from tests.conftest import record, set_params, write_feature_file, write_feature_model_metrics


def run_curves(project, **curves):
    set_params(project, curves={"per_class": [2, 5, 40], "repeats": 2, "classifiers": ["rf", "svm"], **curves})
    result = CliRunner().invoke(cli, ["curves"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_curves_writes_json_csv_and_pictures_for_every_model(project):
    result = run_curves(project)
    folder = project.root / "reports" / "curves"
    summary = json.loads((folder / "curves.json").read_text())
    assert list(summary["models"]) == ["pixel_rf", "vgg16-fc2-rf", "vgg16-fc2-svm"]
    assert summary["per_class"] == [2, 5] and summary["left_out"][0]["per_class"] == 40  # 20 training images a class
    assert "40 images per class left out" in result.output
    assert summary["random_weights"] == ["vgg16-fc2"] and summary["weights"] == {"vgg16-fc2": "none"}
    # One set of draws for all models: every row index recorded once per (size, repeat).
    assert [(draw["per_class"], draw["repeat"], len(draw["rows"])) for draw in summary["draws"]] == [
        (2, 0, 6), (5, 0, 15), (2, 1, 6), (5, 1, 15)
    ]
    with open(folder / "curves.csv") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3 * 2 * 2 and set(rows[0]) == {"model", "per_class", "repeat", "accuracy"}
    for name in ("curves.png", "embedding-pixels.png", "embedding-vgg16-fc2.png"):
        assert (folder / name).read_bytes()[:4] == b"\x89PNG"
    assert summary["sentence"] and summary["sentence"] in result.output


def test_the_report_gains_the_section(project):
    run_curves(project)
    metrics = write_feature_model_metrics(project)
    scratch = record("scratch-cnn", 0.8, input="images", features="images", backbone=None, layer=None, weights=None)
    (metrics / "scratch-cnn.json").write_text(json.dumps(scratch))
    assert CliRunner().invoke(cli, ["report"], catch_exceptions=False).exit_code == 0
    text = (project.root / "reports" / "report.md").read_text()
    section = text[text.index("## How many labels?"):]
    assert "**WARNING: random weights.**" in section and "![Learning curves](curves/curves.png)" in section
    assert "| model | 2 / class | 5 / class |" in section and "| pixel_rf (pixels) | " in section
    assert "![t-SNE of vgg16-fc2](curves/embedding-vgg16-fc2.png)" in section


@pytest.mark.parametrize(
    "curves, args, expected",
    [
        ({"per_class": [0, 5]}, [], "params: curves.per_class: expected a list of integers >= 1"),
        ({"per_class": [-2]}, [], "params: curves.per_class: expected a list of integers >= 1"),
        ({}, ["--repeats", "0"], "params: curves.repeats: expected an integer >= 1, got 0"),
        ({"classifiers": ["rf", "nosuch"]}, [], "params: curves.classifiers: unknown classifier 'nosuch'; expected one of: dense, knn, logreg, rf, svm"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key_and_nothing_is_written(project, capsys, curves, args, expected):
    set_params(project, curves={"per_class": [2], "repeats": 1, **curves})
    with pytest.raises(SystemExit) as exited:
        run(cli, ["curves", *args], prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"featpipe: error: {expected}")
    assert not (project.root / "reports" / "curves").exists()


def test_features_from_another_image_store_are_refused(project, capsys):
    write_feature_file(project.features, project.images, image_store_fingerprint="another store")
    set_params(project, curves={"per_class": [2], "repeats": 1})
    with pytest.raises(SystemExit) as exited:
        run(cli, ["curves"], prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "was extracted from another image store" in err and err.count("\n") == 1
    assert not (project.root / "reports" / "curves").exists()
