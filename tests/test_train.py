"""`featpipe train`: every classifier on a tiny feature file, and every refusal in one line."""

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.cli import cli, run
from tests.conftest import CLASS_NAMES, FAST_PARAMS, set_params, write_feature_file


def invoke(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def fail(args, capsys):
    """Run ``featpipe ARGS`` expecting a user error; return its one stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        run(cli, args, prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("featpipe: error: "), err
    return err


METRIC_KEYS = {
    "model", "classifier", "accuracy", "balanced_accuracy", "macro_f1", "per_class", "fit_seconds",
    "predict_seconds", "n_train", "n_test", "n_features", "backbone", "layer", "weights", "random_weights",
    "params", "seed", "search", "data", "feature_file", "features",
}


def test_train_writes_model_metrics_and_plots_for_every_classifier(project):
    result = invoke(["train"])
    assert "vgg16-fc2-dense: accuracy" in result.output
    for name, model in (("rf", "model.skops"), ("svm", "model.skops"), ("dense", "model.keras")):
        record = json.loads((project.root / f"reports/metrics/vgg16-fc2-{name}.json").read_text())
        assert METRIC_KEYS <= set(record), METRIC_KEYS - set(record)
        assert record["accuracy"] >= (0.7 if name == "dense" else 0.9), (name, record["accuracy"])
        assert set(record["per_class"]) == set(CLASS_NAMES)
        assert set(record["per_class"]["cross"]) == {"precision", "recall", "support"}
        assert (record["n_train"], record["n_test"], record["weights"], record["random_weights"]) == (60, 30, "none", True)
        assert (record["backbone"], record["layer"], record["classifier"]) == ("vgg16", "fc2", name)
        assert (project.root / f"data/models/vgg16-fc2-{name}/{model}").stat().st_size > 0
        card = json.loads((project.root / f"data/models/vgg16-fc2-{name}/model.json").read_text())
        assert card["class_names"] == CLASS_NAMES and card["model_file"] == model and card["output_labels"] == [0, 1, 2]
        rows = (project.root / f"reports/plots/vgg16-fc2-{name}-confusion.csv").read_text().splitlines()
        assert rows[0] == "actual,predicted" and len(rows) == 31 and set(rows[1].split(",")) <= set(CLASS_NAMES)
        assert (project.root / f"reports/plots/vgg16-fc2-{name}-confusion.png").read_bytes()[:4] == b"\x89PNG"
    dense = json.loads((project.root / "reports/metrics/vgg16-fc2-dense.json").read_text())
    assert 1 <= dense["training"]["best_epoch"] <= dense["training"]["epochs_run"] <= 30
    assert not list(project.root.rglob("*.partial*"))


def test_saved_models_load_and_predict_like_the_metrics_say(project):
    from classifiers.model_files import load_skops
    from plumbing.backend import load_keras

    invoke(["train", "--classifier", "svm", "--classifier", "dense"])
    test = h5py.File(project.features)["test"]
    features, labels = test["features"][:], test["labels"][:]
    svm = load_skops(project.root / "data/models/vgg16-fc2-svm/model.skops")
    dense = load_keras().saving.load_model(project.root / "data/models/vgg16-fc2-dense/model.keras")
    for name, predicted in (("svm", svm.predict(features)), ("dense", dense.predict(features, verbose=0).argmax(1))):
        record = json.loads((project.root / f"reports/metrics/vgg16-fc2-{name}.json").read_text())
        assert np.mean(predicted == labels) == pytest.approx(record["accuracy"]), name


def test_grid_search_records_best_params_and_cv_score(project):
    set_params(project, train={**FAST_PARAMS["train"], "search": {"enabled": True, "cv": 3, "grids": {"svm": {"C": [0.1, 1.0]}}}})
    invoke(["train", "--classifier", "svm", "--classifier", "rf"])
    svm = json.loads((project.root / "reports/metrics/vgg16-fc2-svm.json").read_text())
    assert svm["search"]["best_params"]["C"] in (0.1, 1.0) and 0 <= svm["search"]["cv_accuracy"] <= 1
    assert svm["search"]["cv"] == 3
    assert json.loads((project.root / "reports/metrics/vgg16-fc2-rf.json").read_text())["search"] is None


def _metrics_written(project):
    return sorted(path.name for path in (project.root / "reports").rglob("*") if path.is_file())


@pytest.mark.parametrize(
    "attrs, message",
    [
        ({"image_store_fingerprint": "0" * 64}, "was extracted from another image store than"),
        ({"class_names": ["circle", "cross", "square"]}, "has class names ['circle', 'cross', 'square'] but"),
    ],
)
def test_refuses_features_from_another_image_store(project, capsys, attrs, message):
    write_feature_file(project.features, project.images, **attrs)
    assert message in fail(["train"], capsys)
    assert _metrics_written(project) == []


def test_refuses_missing_or_incomplete_feature_files(project, capsys):
    assert "feature file not found: nope.h5 (run `featpipe extract` first)" in fail(["train", "--features", "nope.h5"], capsys)
    write_feature_file(project.root / "data/features/half.h5", project.images, complete=False)
    (project.root / "data/features/half.h5.partial").rename(project.root / "data/features/half.h5")
    assert "half.h5 is incomplete" in fail(["train", "--features", "data/features/half.h5"], capsys)


def test_refuses_unknown_classifier_listing_valid_ones(project, capsys):
    err = fail(["train", "--classifier", "nosuch"], capsys)
    assert "unknown classifier 'nosuch'; expected one of: dense, knn, logreg, rf, svm" in err


def test_refuses_single_class_training_set(project, capsys):
    with h5py.File(project.features, "a") as file:
        file["train"]["labels"][...] = 1
    assert "vgg16-fc2.h5 train holds a single class (1); a classifier needs at least two" in fail(["train"], capsys)
    assert _metrics_written(project) == []


def test_refuses_nan_and_infinite_features_before_any_model(project, capsys):
    def poisoned(split, rows, labels):
        rows[5, 3] = np.nan if split == "train" else rows[5, 3]
        return rows

    write_feature_file(project.features, project.images, transform=poisoned)
    err = fail(["train"], capsys)
    assert "features hold NaN or infinite values (first at row 5, column 3)" in err
    assert _metrics_written(project) == []


def test_rbf_svm_past_its_size_approximates_the_kernel_and_says_so(project):
    from classifiers.model_files import load_skops

    set_params(project, train={**FAST_PARAMS["train"], "svm": {"max_rbf_samples": 50, "nystroem_components": 30}})
    result = invoke(["train", "--classifier", "svm"])
    assert ("train: svm: 60 training rows are more than max_rbf_samples=50: the RBF kernel is approximated "
            "(Nystroem, 30 components, then a least-squares linear SVM)") in result.output
    record = json.loads((project.root / "reports/metrics/vgg16-fc2-svm.json").read_text())
    assert {key: record["training"][key] for key in ("kernel", "approximation", "n_components", "max_rbf_samples")} == {
        "kernel": "rbf", "approximation": "nystroem", "n_components": 30, "max_rbf_samples": 50}
    assert record["accuracy"] >= 0.9
    saved = load_skops(project.root / "data/models/vgg16-fc2-svm/model.skops")
    assert [name for name, _ in saved.steps] == ["scale", "nystroem", "svc"]
    set_params(project, train={**FAST_PARAMS["train"], "svm": {"max_rbf_samples": 60}})
    assert "approximated" not in invoke(["train", "--classifier", "svm"]).output
    assert json.loads((project.root / "reports/metrics/vgg16-fc2-svm.json").read_text())["training"] is None


def test_unreachable_scheduler_names_the_address(project, capsys):
    err = fail(["train", "--classifier", "rf", "--scheduler", "tcp://127.0.0.1:9"], capsys)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert _metrics_written(project) == []


def test_rf_on_a_dask_cluster_matches_the_local_fit(project, dask_cluster, dask_scheduler):
    set_params(project, train={**FAST_PARAMS["train"], "rf": {"n_estimators": 20, "n_jobs": -1}})
    metrics = project.root / "reports/metrics/vgg16-fc2-rf.json"
    confusion = project.root / "reports/plots/vgg16-fc2-rf-confusion.csv"
    invoke(["train", "--classifier", "rf"])
    local = json.loads(metrics.read_text()), confusion.read_text()
    transitions = dask_cluster.scheduler.transition_counter
    result = invoke(["train", "--classifier", "rf", "--scheduler", dask_scheduler])
    assert f"goes to the Dask scheduler at {dask_scheduler}" in result.output
    assert dask_cluster.scheduler.transition_counter > transitions, "no task reached the cluster"
    remote = json.loads(metrics.read_text()), confusion.read_text()
    assert remote[0]["accuracy"] == local[0]["accuracy"]
    assert remote[1] == local[1], "predictions differ between the local and the Dask fit"


def test_an_uncreatable_output_folder_stops_before_any_file_is_written(project, capsys):
    (project.root / "reports").mkdir()
    (project.root / "reports" / "metrics").write_text("a file where the folder goes")
    with pytest.raises(SystemExit) as exited:
        run(cli, ["train", "--classifier", "rf"], prog_name="featpipe")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("featpipe: error:")]
    assert exited.value.code == 2
    assert errors == ["featpipe: error: cannot create output folder reports/metrics: reports/metrics is a file, not a folder"]
    assert not (project.root / "data" / "models" / "vgg16-fc2-rf").exists()
    assert not (project.root / "reports" / "plots").exists()


def test_train_and_curves_take_one_features_option():
    import click

    from pipeline.curves import curves
    from pipeline.options import features_option
    from pipeline.train import train

    reference = next(p for p in features_option(click.command()(lambda feature_paths: None)).params)
    for command in (train, curves):
        option = next(p for p in command.params if p.name == "feature_paths")
        assert option.to_info_dict() == reference.to_info_dict(), command.name
