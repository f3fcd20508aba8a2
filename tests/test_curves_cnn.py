"""The CNNs on the learning curves: fitted on the same draws as the feature models, and the crossover sentence."""

import json

import pytest
from click.testing import CliRunner

from learning_curves.curves import find_crossovers
from pipeline.cli import cli
from reporting.sentences import crossover_sentence
from tests.conftest import set_params, write_feature_model_metrics


def curve(means, *, baseline=False, cnn=False, random_weights=False, stds=None):
    sizes = [{"per_class": size, "mean": mean, "std": std}
             for size, mean, std in zip((5, 20, 100), means, stds or [0.01] * len(means))]
    return {"features": "x", "classifier": "scratch" if cnn else "svm", "baseline": baseline, "cnn": cnn,
            "random_weights": random_weights, "sizes": sizes}


def test_the_crossover_is_the_first_size_where_the_cnn_reaches_the_best_feature_model_at_that_size():
    curves = {"pixel_rf": curve([0.5, 0.6, 0.95], baseline=True),  # the pixel forest is no feature model
              "f-svm": curve([0.60, 0.70, 0.80]), "f-rf": curve([0.55, 0.72, 0.78]),
              "scratch-cnn": curve([0.30, 0.71, 0.85], cnn=True, stds=[0.1, 0.02, 0.03])}
    [crossover] = find_crossovers(curves)
    assert crossover["crossed"]
    assert (crossover["per_class"], crossover["best_model"], crossover["mean"], crossover["best_mean"]) == (100, "f-svm", 0.85, 0.80)
    assert crossover_sentence([crossover], 5) == (
        "The CNN from scratch, scratch-cnn, first matches or beats the best feature model at 100 images per class: "
        "0.850 ± 0.030 against 0.800 ± 0.010 for f-svm (mean ± standard deviation over 5 draws).")
    curves["scratch-cnn"] = curve([0.30, 0.72, 0.70], cnn=True)  # a tie with f-rf at 20 matches
    assert find_crossovers(curves)[0]["per_class"] == 20


def test_a_cnn_that_never_reaches_the_feature_models_is_said_to_with_the_largest_size_and_random_weights_warn():
    curves = {"f-svm": curve([0.60, 0.70, 0.80], random_weights=True), "scratch-cnn": curve([0.3, 0.5, 0.7], cnn=True)}
    [crossover] = find_crossovers(curves)
    assert not crossover["crossed"] and crossover["per_class"] == 100 and crossover["random_weights"] == ["f-svm"]
    assert crossover_sentence([crossover], 1) == (
        "WARNING: random weights (f-svm), not pretrained ones: this says nothing about what pretrained features are "
        "worth. The CNN from scratch, scratch-cnn, does not match the best feature model at any size drawn (5 to 100 "
        "images per class); at 100 images per class it scores 0.700 ± 0.010 against 0.800 ± 0.010 for f-svm "
        "(mean ± standard deviation over 1 draw).")
    assert find_crossovers({"f-svm": curves["f-svm"]}) == [] and crossover_sentence([], 5) is None


def test_the_match_and_share_sentences_ignore_the_cnn():
    from learning_curves.curves import find_match

    curves = {"pixel_rf": curve([0.5, 0.6, 0.7], baseline=True), "f-svm": curve([0.4, 0.5, 0.6]),
              "scratch-cnn": curve([0.8, 0.9, 0.95], cnn=True)}
    assert find_match(curves)["model"] == "f-svm" and not find_match(curves)["matched"]


@pytest.mark.slow  # the tiny CNN fitted on 4 draws: ~15 s on 2 cores
def test_curves_fits_the_cnn_on_the_same_draws_and_the_report_states_the_crossover(project):
    set_params(project, curves={"per_class": [2, 5], "repeats": 2, "classifiers": ["svm"], "cnn": True},
               scratch={"filters": [4], "dense_units": 8, "epochs": 2, "augment": []})
    result = CliRunner().invoke(cli, ["curves"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((project.root / "reports" / "curves" / "curves.json").read_text())
    assert list(summary["models"]) == ["pixel_rf", "vgg16-fc2-svm", "scratch-cnn"]
    cnn = summary["models"]["scratch-cnn"]
    assert cnn["cnn"] and not summary["models"]["vgg16-fc2-svm"]["cnn"]
    assert [len(size["accuracy"]) for size in cnn["sizes"]] == [2, 2]
    [crossover] = summary["crossovers"]
    assert crossover["model"] == "scratch-cnn" and crossover["random_weights"] == ["vgg16-fc2-svm"]
    sentence = summary["crossover_sentence"]
    assert sentence.startswith("WARNING: random weights (vgg16-fc2-svm)") and sentence in result.output
    assert "embedding-images.png" not in {path.name for path in (project.root / "reports" / "curves").iterdir()}
    write_feature_model_metrics(project)
    assert CliRunner().invoke(cli, ["report"], catch_exceptions=False).exit_code == 0
    report = (project.root / "reports" / "report.md").read_text()
    assert sentence in report and "| scratch-cnn (CNN on the images) | " in report
