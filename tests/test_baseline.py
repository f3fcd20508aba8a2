"""`featpipe baseline`: a random forest on raw pixels, scored like every other model."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from classifiers.pixels import pixel_matrix
from pipeline.cli import cli, run
from tests.conftest import CLASS_NAMES


def test_pixel_matrix_flattens_and_scales_to_unit_range():
    images = np.array([[[[0], [255]], [[51], [102]]]], dtype=np.uint8)
    pixels = pixel_matrix(images)
    assert pixels.dtype == np.float32 and pixels.shape == (1, 4)
    np.testing.assert_allclose(pixels, [[0.0, 1.0, 0.2, 0.4]])


def test_baseline_writes_metrics_and_confusion_plots_reproducibly(tiny_image_store, in_tmp_project):
    (in_tmp_project / "params.yaml").write_text(yaml.safe_dump({"seed": 3, "baseline": {"n_estimators": 10, "n_jobs": 1}}))
    runner = CliRunner()
    result = runner.invoke(cli, ["baseline", "--images", str(tiny_image_store)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = in_tmp_project / "reports/metrics/pixel_rf.json"
    record = json.loads(metrics.read_text())
    assert record["model"] == "pixel_rf" and record["features"] == "pixels" and record["random_weights"] is False
    assert (record["n_train"], record["n_test"], record["n_features"]) == (12, 6, 256)
    assert record["params"] == {"n_estimators": 10, "criterion": "entropy", "max_depth": 100, "n_jobs": 1}
    assert set(record["per_class"]) == set(CLASS_NAMES) and record["data"]["source"] == "tiny"
    assert {"accuracy", "balanced_accuracy", "macro_f1", "fit_seconds", "predict_seconds"} <= set(record)
    rows = (in_tmp_project / "reports/plots/pixel_rf-confusion.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted" and len(rows) == 7
    assert (in_tmp_project / "reports/plots/pixel_rf-confusion.png").read_bytes()[:4] == b"\x89PNG"
    before = rows
    assert runner.invoke(cli, ["baseline", "--images", str(tiny_image_store), "--n-jobs", "2"]).exit_code == 0
    # Same seed, same trees, whatever the number of jobs.
    assert (in_tmp_project / "reports/plots/pixel_rf-confusion.csv").read_text().splitlines() == before


def test_baseline_without_an_image_store_says_what_to_run(in_tmp_project, capsys):
    (in_tmp_project / "params.yaml").write_text("{}\n")
    with pytest.raises(SystemExit) as exited:
        run(cli, ["baseline"], prog_name="featpipe")
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "featpipe: error: image store not found: data/prepared/images.h5 (run `featpipe prepare` first)\n"
    )
    assert not (in_tmp_project / "reports").exists()
