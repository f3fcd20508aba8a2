"""`featpipe report`: one table of every model against the pixel baseline, warnings first."""

import json

import pytest
import yaml
from click.testing import CliRunner

from classifiers.records import ModelRecord
from reporting.markdown import rank, render_report
from pipeline.cli import cli, run
from tests.conftest import BASELINE, DATA, record

def as_record(fields):
    return ModelRecord.from_json(fields, "test record")


def render(models, baseline=BASELINE):
    return render_report(
        as_record(baseline), [as_record(model) for model in models],
        accuracy_chart="plots/accuracy.png", best_confusion=lambda n: f"plots/{n}-confusion.png",
    )


def table_rows(text):
    return [line for line in text.splitlines() if line.startswith("| ") and line[2:3].isdigit()]


def test_report_ranks_every_model_with_points_against_the_baseline():
    text = render([record("vgg16-fc2-rf", 0.785), record("vgg16-fc2-svm", 0.8512)])
    rows = table_rows(text)
    assert [row.split(" | ")[1] for row in rows] == ["vgg16-fc2-svm", "pixel_rf", "vgg16-fc2-rf"]
    assert "| 0.8512 | +5.1 |" in rows[0] and "| baseline |" in rows[1] and "| 0.7850 | -1.5 |" in rows[2]
    assert "WARNING" not in text
    assert "- Data set: fashion_mnist, 2 classes (T-shirt/top, Trouser)" in text
    assert "- Training images: 2000 (stratified subset); test images: 1000 (stratified subset)" in text
    assert "- Features: vgg16 `fc2` (4096 dimensions), weights: imagenet" in text
    assert "![Test accuracy by model](plots/accuracy.png)" in text
    assert "## Best model: vgg16-fc2-svm" in text and "(plots/vgg16-fc2-svm-confusion.png)" in text


def test_random_weights_are_announced_at_the_top():
    text = render([record("vgg16-fc2-rf", 0.6, weights="none", random_weights=True), record("vgg16-fc2-svm", 0.7)])
    first_paragraph = text.split("\n\n")[1]
    assert first_paragraph.startswith("> **WARNING: random weights.** vgg16 fc2: from a network with")
    assert "| none (random) |" in text


def test_models_from_another_image_store_are_flagged():
    stale = record("vgg16-fc2-rf", 0.9, data={**DATA, "image_store_fingerprint": "old"})
    assert "> **WARNING: mixed data.** vgg16-fc2-rf came from another image store" in render([stale])


def test_ranking_is_stable_on_ties():
    ranked = rank([as_record(record("b", 0.5)), as_record(record("a", 0.5)), as_record(record("c", 0.9))])
    assert [r.model for r in ranked] == ["c", "a", "b"]


@pytest.fixture
def reported_project(in_tmp_project):
    params = {
        "extract": {"backbones": [{"name": "vgg16", "layer": "fc2"}]},
        "train": {"classifiers": ["rf", "dense"]},
    }
    (in_tmp_project / "params.yaml").write_text(yaml.safe_dump(params))
    metrics = in_tmp_project / "reports" / "metrics"
    metrics.mkdir(parents=True)
    (metrics / "pixel_rf.json").write_text(json.dumps(BASELINE))
    (metrics / "vgg16-fc2-rf.json").write_text(json.dumps(record("vgg16-fc2-rf", 0.83, weights="none", random_weights=True)))
    (metrics / "vgg16-fc2-dense.json").write_text(json.dumps(record("vgg16-fc2-dense", 0.86, weights="none", random_weights=True)))
    # Left over from an earlier configuration: params no longer ask for it.
    (metrics / "resnet50-avg_pool-rf.json").write_text(json.dumps(record("resnet50-avg_pool-rf", 0.99)))
    curve = {"epoch": [1, 2, 3], "phase": [1, 1, 1], "loss": [2.0, 1.0, 0.8], "accuracy": [0.3, 0.6, 0.7],
             "val_loss": [1.9, 1.1, 1.0], "val_accuracy": [0.3, 0.55, 0.6]}
    scratch = record("scratch-cnn", 0.84, classifier="cnn", input="images", features="images", backbone=None,
                     layer=None, weights=None, training={"epochs_run": 3, "best_epoch": 3, "curve": curve})
    (metrics / "scratch-cnn.json").write_text(json.dumps(scratch))
    return in_tmp_project


def test_report_command_writes_markdown_and_accuracy_chart(reported_project):
    result = CliRunner().invoke(cli, ["report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "features from random weights (vgg16 fc2)" in result.output
    text = (reported_project / "reports/report.md").read_text()
    assert text.startswith("# featpipe report\n\n> **WARNING: random weights.**")
    assert [row.split(" | ")[1] for row in table_rows(text)] == ["vgg16-fc2-dense", "scratch-cnn", "vgg16-fc2-rf", "pixel_rf"]
    assert "| scratch-cnn | the images | — | cnn | 0.8400 |" in text and "| pixel_rf | raw pixels | — | rf |" in text
    assert "resnet50" not in text
    assert "(plots/vgg16-fc2-dense-confusion.png)" in text
    assert (reported_project / "reports/plots/accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "## How the image models learned" in text and "(plots/training/scratch-cnn.png)" in text
    assert (reported_project / "reports/plots/training/scratch-cnn.png").read_bytes()[:4] == b"\x89PNG"


def test_models_not_trained_yet_are_named_and_the_others_reported(reported_project):
    (reported_project / "reports/metrics/vgg16-fc2-dense.json").unlink()
    (reported_project / "reports/metrics/scratch-cnn.json").unlink()
    result = CliRunner().invoke(cli, ["report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert ("report: not trained yet, left out of the report: vgg16-fc2-dense (`featpipe train`), "
            "scratch-cnn (`featpipe scratch`)\n") in result.stderr
    text = (reported_project / "reports/report.md").read_text()
    assert ("> **Not trained yet:** vgg16-fc2-dense (`featpipe train`), scratch-cnn (`featpipe scratch`). "
            "The report shows the models that are; `dvc repro` trains them all.") in text
    assert [row.split(" | ")[1] for row in table_rows(text)] == ["vgg16-fc2-rf", "pixel_rf"]


def test_without_the_pixel_baseline_the_report_says_so_and_without_any_model_it_stops(reported_project, capsys):
    (reported_project / "reports/metrics/pixel_rf.json").unlink()
    result = CliRunner().invoke(cli, ["report"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "pixel_rf (`featpipe baseline`)" in result.stderr and "(no pixel baseline yet)" in result.stdout
    text = (reported_project / "reports/report.md").read_text()
    assert [row.split(" | ")[1] for row in table_rows(text)] == ["vgg16-fc2-dense", "scratch-cnn", "vgg16-fc2-rf"]
    assert "| 0.8600 | — |" in text and "no pixel baseline to compare with yet (`featpipe baseline`)" in text
    for name in ("vgg16-fc2-rf", "vgg16-fc2-dense", "scratch-cnn"):
        (reported_project / f"reports/metrics/{name}.json").unlink()
    with pytest.raises(SystemExit) as exited:
        run(cli, ["report"], prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1
    assert err.startswith("featpipe: error: nothing to report: no metrics file of the models the params ask for")


def test_an_explicit_metrics_file_must_exist(reported_project, capsys):
    with pytest.raises(SystemExit) as exited:
        run(cli, ["report", "--metrics", "reports/metrics/nope.json"], prog_name="featpipe")
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "featpipe: error: metrics file not found: reports/metrics/nope.json (run `featpipe train` first)\n"
    )
    assert not (reported_project / "reports/report.md").exists()


def test_the_best_model_section_says_how_to_apply_it():
    text = render([record("vgg16-fc2-rf", 0.785), record("vgg16-fc2-svm", 0.8512)])
    best = text[text.index("## Best model: vgg16-fc2-svm"):]
    assert ("Apply it to new images: `featpipe predict --model data/models/vgg16-fc2-svm photos/ "
            "--out predictions.csv`") in best.split("![")[0]


def test_a_keras_backbone_shows_its_file_name_not_its_path():
    own = record("my-fc-rf", 0.9, backbone="/home/someone/project/models/my.keras", layer="fc")
    text = render([own])
    assert "/home/someone" not in text
    assert "- Features: my.keras `fc` (4096 dimensions), weights: imagenet" in text
    assert "| my-fc-rf | my.keras `fc` | imagenet |" in text


def test_several_feature_files_get_a_table_of_files_by_classifiers_with_the_best_cell_marked():
    def on(features, classifier, accuracy, layer, dim):
        return record(f"{features}-{classifier}", accuracy, features=features, layer=layer, n_features=dim,
                      classifier=classifier)

    text = render([on("vgg16-fc2", "rf", 0.81, "fc2", 4096), on("vgg16-fc2", "logreg", 0.86, "fc2", 4096),
                   on("vgg16-fc1", "rf", 0.83, "fc1", 4096), on("vgg16-fc1", "logreg", 0.88, "fc1", 4096),
                   on("vgg16-avg_pool", "rf", 0.84, "avg_pool", 512)])
    section = text[text.index("## Which features?"):].split("\n\n![")[0]
    assert "| features | backbone, layer | dimensions | rf | logreg | best head |" in section
    assert "| vgg16-fc2 | vgg16 `fc2` | 4096 | 0.8100 | 0.8600 | logreg |" in section
    assert "| vgg16-fc1 | vgg16 `fc1` | 4096 | 0.8300 | **0.8800** | logreg |" in section
    assert "| vgg16-avg_pool | vgg16 `avg_pool` | 512 | 0.8400 | — | rf |" in section
    assert section.count("**") == 2
    assert "## Which features?" not in render([on("vgg16-fc2", "rf", 0.81, "fc2", 4096)])


@pytest.mark.parametrize(
    "content, expected",
    [
        (bytes(range(256)), "metrics file reports/metrics/vgg16-fc2-dense.json is not valid JSON; rerun `featpipe train`"),
        (b"[1, 2, 3]", "metrics file reports/metrics/vgg16-fc2-dense.json: expected a JSON object (a model record), got list"),
        (b"null", "expected a JSON object (a model record), got NoneType"),
        (b"{}", "metrics file reports/metrics/vgg16-fc2-dense.json: 'model' must be a str, got None; rerun its stage"),
        (json.dumps(record("vgg16-fc2-dense", 0.5) | {"accuracy": "high"}).encode(), "'accuracy' must be a number, got 'high'"),
        (json.dumps(record("vgg16-fc2-dense", 1.5)).encode(), "'accuracy' must be in [0, 1], got 1.5"),
    ],
)
def test_a_metrics_file_that_is_not_a_record_is_one_line(reported_project, capsys, content, expected):
    (reported_project / "reports/metrics/vgg16-fc2-dense.json").write_bytes(content)
    with pytest.raises(SystemExit) as exited:
        run(cli, ["report"], prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err
    assert not (reported_project / "reports/report.md").exists()
