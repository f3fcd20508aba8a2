"""`featpipe curves` to the end of the curve: the whole split (`all`), the probes, one line per note."""

import csv
import json

import pytest
from click.testing import CliRunner

from pipeline.cli import cli, run
from tests.conftest import set_params, write_feature_model_metrics


def run_curves(project, **curves):
    set_params(project, curves={"repeats": 2, "classifiers": ["rf", "svm"], **curves})
    result = CliRunner().invoke(cli, ["curves"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def fail_curves(project, capsys, **curves):
    set_params(project, curves={"repeats": 1, **curves})
    with pytest.raises(SystemExit) as exited:
        run(cli, ["curves"], prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and err.startswith("featpipe: error: "), err
    assert not (project.root / "reports" / "curves").exists()
    return err


def test_all_ends_the_curve_at_the_whole_split_with_one_fit(project):
    result = run_curves(project, per_class=[2, 5, "all"])
    folder = project.root / "reports" / "curves"
    summary = json.loads((folder / "curves.json").read_text())
    assert summary["per_class"] == [2, 5, "all"]
    assert summary["draws"][-1] == {"per_class": "all", "repeat": 0, "model_seed": 7, "rows": list(range(60))}
    assert [draw["per_class"] for draw in summary["draws"]].count("all") == 1
    whole = summary["models"]["vgg16-fc2-svm"]["sizes"][-1]
    assert (whole["per_class"], whole["n_train"], whole["images_per_class"], len(whole["accuracy"])) == ("all", 60, 20.0, 1)
    with open(folder / "curves.csv") as file:
        rows = [row for row in csv.DictReader(file) if row["model"] == "vgg16-fc2-svm"]
    # DVC's plot needs numbers on its axis: the whole split sits at its rows per class.
    assert [(row["per_class"], row["repeat"]) for row in rows] == [("2", "0"), ("5", "0"), ("2", "1"), ("5", "1"), ("20.0", "0")]
    share = summary["share"]
    best = max(("vgg16-fc2-rf", "vgg16-fc2-svm"), key=lambda name: summary["models"][name]["sizes"][-1]["mean"])
    assert share["model"] == best and share["n_train"] == 60
    for point, size in zip(share["shares"], summary["models"][best]["sizes"]):
        assert point["share"] == pytest.approx(size["mean"] / share["full"], abs=1e-6)
    assert summary["share_sentence"].startswith(
        f"With the whole training split (60 images) the best feature model, {best}, scores {share['full']:.3f}; "
        f"few labels reach {share['shares'][0]['share']:.0%} of it with 2 images per class")
    assert summary["share_sentence"] in result.output


def test_the_report_shows_the_whole_split_and_what_share_the_few_labels_reach(project):
    run_curves(project, per_class=[2, 5, "all"])
    write_feature_model_metrics(project)
    assert CliRunner().invoke(cli, ["report"], catch_exceptions=False).exit_code == 0
    section = (project.root / "reports" / "report.md").read_text().split("## How many labels?")[1]
    summary = json.loads((project.root / "reports" / "curves" / "curves.json").read_text())
    assert "| model | 2 / class | 5 / class | all (60) |" in section
    whole = summary["models"]["vgg16-fc2-svm"]["sizes"][-1]["mean"]
    assert f" | {whole:.3f} |" in [line for line in section.splitlines() if line.startswith("| vgg16-fc2-svm |")][0]
    assert summary["share_sentence"] in section


def test_sizes_left_out_are_one_line_on_stderr_and_in_the_report(project):
    result = run_curves(project, per_class=[2, 5, 40, 50])
    lines = [line for line in result.stderr.splitlines() if "left out" in line]
    assert lines == ["curves: 40, 50 images per class left out: class 'circle' has only 20 training rows"]
    set_params(project, train={"classifiers": ["rf"]})
    write_feature_model_metrics(project, classifiers=["rf"])
    assert CliRunner().invoke(cli, ["report"], catch_exceptions=False).exit_code == 0
    text = (project.root / "reports" / "report.md").read_text()
    assert [line for line in text.splitlines() if "left out" in line] == [
        "40, 50 images per class left out: class 'circle' has only 20 training rows."]


def test_the_probes_run_in_curves_and_say_when_a_size_has_fewer_rows_than_folds(project):
    result = run_curves(project, per_class=[2, 5], classifiers=["logreg", "knn"])
    summary = json.loads((project.root / "reports" / "curves" / "curves.json").read_text())
    assert list(summary["models"]) == ["pixel_rf", "vgg16-fc2-logreg", "vgg16-fc2-knn"]
    assert summary["models"]["vgg16-fc2-logreg"]["sizes"][-1]["mean"] >= 0.8
    notes = [line for line in result.stderr.splitlines() if "cross-validation" in line]
    assert notes == ["curves: logreg: 2-fold cross-validation instead of cv=3: class 0 has only 2 training rows",
                     "curves: knn: 2-fold cross-validation instead of cv=3: class 0 has only 2 training rows"]


@pytest.mark.parametrize(
    "curves, expected",
    [
        ({"per_class": [5, 40, "all"]},
         "params: curves.per_class: [40] next to 'all': more images per class than the training split holds of "
         "class 'circle' (20 rows); 'all' already ends the curve at the whole split"),
        ({"per_class": [1, 5], "classifiers": ["rf", "knn"]},
         "params: curves.per_class: 1 images per class: knn: choosing its setting by cross-validation needs at "
         "least 2 training rows of every class; class 0 has 1"),
        ({"per_class": [5, "everything"]}, "params: curves.per_class: expected a list of integers >= 1 or 'all'"),
        ({"per_class": [5, "all"], "classifiers": ["rf", "nosuch"]}, "params: curves.classifiers: unknown classifier 'nosuch'"),
    ],
)
def test_bad_curves_settings_are_one_line_naming_the_key(project, capsys, curves, expected):
    assert fail_curves(project, capsys, **curves).startswith(f"featpipe: error: {expected}")


@pytest.mark.parametrize(
    "train, expected",
    [
        ({"knn": {"k": []}}, "params: train.knn.k: expected a non-empty list of integers >= 1 (neighbours), got []"),
        ({"knn": {"k": [0, 5]}}, "params: train.knn.k: expected a non-empty list of integers >= 1 (neighbours), got [0, 5]"),
        ({"knn": {"k": [2.5]}}, "params: train.knn.k: expected a non-empty list of integers >= 1"),
        ({"logreg": {"C": []}}, "params: train.logreg.C: expected a non-empty list of positive numbers"),
        ({"logreg": {"C": [1.0, 0]}}, "params: train.logreg.C: expected a non-empty list of positive numbers (inverse regularisation strengths), got [1.0, 0]"),
        ({"logreg": {"C": [-1.0]}}, "params: train.logreg.C: expected a non-empty list of positive numbers"),
        ({"logreg": {"cv": 1}}, "params: train.logreg.cv: expected an integer >= 2, got 1"),
        ({"svm": {"nystroem_components": 0}}, "params: train.svm.nystroem_components: expected an integer >= 1, got 0"),
    ],
)
def test_bad_probe_settings_are_one_line_naming_the_key(project, capsys, train, expected):
    set_params(project, train=train)
    for command in (["train"], ["curves"]):
        with pytest.raises(SystemExit) as exited:
            run(cli, command, prog_name="featpipe")
        err = capsys.readouterr().err
        assert exited.value.code == 2, err
        assert err.startswith(f"featpipe: error: {expected}") and err.count("\n") == 1, err


def test_an_rbf_svm_approximated_on_the_whole_split_says_so_once(project):
    set_params(project, train={"svm": {"max_rbf_samples": 50, "nystroem_components": 20}})
    result = run_curves(project, per_class=[2, 5, "all"], classifiers=["svm"])
    notes = [line for line in result.stderr.splitlines() if "approximated" in line]
    assert notes == ["curves: svm: 60 training rows are more than max_rbf_samples=50: the RBF kernel is approximated "
                     "(Nystroem, 20 components, then a least-squares linear SVM)"]
