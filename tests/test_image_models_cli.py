"""`featpipe scratch` and `featpipe finetune`: CNNs on the stored images, written like every other model."""

import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from pipeline.cli import cli, run
from storage.image_store import ImageStore, write_image_store
from tests.conftest import CLASS_NAMES, make_splits, probabilities_in_a_fresh_process

FAST = {
    "seed": 1,
    "extract": {"weights": "none"},
    # min_validation_per_class 0: hold out 10% of 24 images anyway, so the record has a validation curve.
    "scratch": {"filters": [4], "dense_units": 8, "epochs": 3, "patience": 2, "augment": ["horizontal_flip"],
                "min_validation_per_class": 0},
    "finetune": {"input_size": 32, "epochs": 1, "batch_size": 8, "unfreeze": 1, "augment": []},
}


@pytest.fixture
def project(in_tmp_project):
    (in_tmp_project / "params.yaml").write_text(yaml.safe_dump(FAST))
    write_image_store(in_tmp_project / "data/prepared/images.h5", make_splits(n_train=24, n_test=12), source="tiny",
                      class_names=CLASS_NAMES, seed=0)
    return in_tmp_project


def set_section(project, section, **values):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section] = {**params.get(section, {}), **values}
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def test_scratch_writes_what_train_writes_and_the_saved_model_alone_gives_its_accuracy(project):
    result = CliRunner().invoke(cli, ["scratch"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Epoch 1/3" in result.output  # Keras' line per epoch
    folder = project / "data/models/scratch-cnn"
    record = json.loads((project / "reports/metrics/scratch-cnn.json").read_text())
    assert record["input"] == "images" and record["classifier"] == "cnn" and record["n_train"] == 24
    # Left out of params.yaml, the architecture is the library's, and the record says what it was.
    from classifiers.cnn.scratch import ARCHITECTURE

    assert all(record["params"][key] == ARCHITECTURE[key] for key in ("batch_norm", "dropout", "normalization"))
    assert record["params"]["filters"] == [4] and record["params"]["augment"] == ["horizontal_flip"]
    training = record["training"]
    assert training["epochs_run"] == len(training["curve"]["loss"]) and 1 <= training["best_epoch"] <= 3
    assert set(training["curve"]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
    card = json.loads((folder / "model.json").read_text())
    assert card["model_file"] == "model.keras" and card["output_labels"] == [0, 1, 2]
    assert (project / "reports/plots/scratch-cnn-confusion.png").exists()
    assert_dvclive_logged(project / "reports/dvclive/scratch-cnn", record)
    # Plain Keras in a fresh process, nothing of featpipe's: the model takes the stored uint8 images.
    with ImageStore(project / "data/prepared/images.h5") as store:
        images, labels = store.images("test"), store.labels("test")
    loaded = probabilities_in_a_fresh_process(folder / "model.keras", images, project)
    assert float(np.mean(loaded.argmax(axis=1) == labels)) == pytest.approx(record["accuracy"], abs=1e-6)


def assert_dvclive_logged(folder, record):
    """DVCLive's files in ``folder``: a row per epoch of the record's curve (every phase), and the test accuracy."""
    import csv

    curve = record["training"]["curve"]
    logged = {path.stem for path in (folder / "plots" / "metrics").glob("*.tsv")}
    watched = {"loss", "accuracy", "val_loss", "val_accuracy"} & set(curve)  # validation only when held out
    assert {"loss", "accuracy"} <= watched <= logged, (watched, logged)
    for metric in watched:
        with open(folder / "plots" / "metrics" / f"{metric}.tsv", newline="") as file:
            rows = list(csv.DictReader(file, delimiter="\t"))
        assert [int(row["step"]) for row in rows] == list(range(len(curve[metric]))), metric
        np.testing.assert_allclose([float(row[metric]) for row in rows], curve[metric], rtol=1e-6, err_msg=metric)
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["test_accuracy"] == record["accuracy"] and summary["step"] == len(curve["loss"]) - 1


def test_quiet_means_no_line_per_epoch(project):
    result = CliRunner().invoke(cli, ["-q", "scratch"], catch_exceptions=False)
    assert result.exit_code == 0 and "Epoch" not in result.output
    assert "scratch-cnn: accuracy" in result.output


def test_finetune_runs_end_to_end_on_a_small_input(project):
    result = CliRunner().invoke(cli, ["finetune", "--backbone", "vgg16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads((project / "reports/metrics/vgg16-finetune.json").read_text())
    assert record["classifier"] == "finetune" and record["backbone"] == "vgg16" and record["random_weights"] is True
    assert [phase["phase"] for phase in record["training"]["phases"]] == [1, 2]
    assert record["training"]["phases"][1]["blocks"] == ["block5_"]
    assert (project / "data/models/vgg16-finetune/model.keras").exists()
    assert "WARNING: random weights" in result.output
    assert_dvclive_logged(project / "reports/dvclive/vgg16-finetune", record)


@pytest.mark.parametrize(
    "command, section, values, expected",
    [
        (["scratch"], "scratch", {"augment": ["spin"]},
         "params: scratch.augment: unknown augmentation 'spin'; expected some of: horizontal_flip"),
        (["finetune", "--backbone", "vgg16"], "finetune", {"unfreeze": 9},
         "params: finetune.unfreeze: unfreeze: backbone vgg16 has 5 blocks"),
        (["finetune", "--backbone", "my.keras"], "finetune", {},
         "featpipe: error: --backbone: cannot fine-tune my.keras: a model file has no known blocks to unfreeze"),
        (["finetune", "--backbone", "nosuch"], "finetune", {},
         "featpipe: error: --backbone: unknown backbone 'nosuch'; expected one of: densenet121"),
        (["finetune", "--backbone", "vgg16"], "finetune", {"augment": ["spin"]}, "params: finetune.augment: unknown augmentation 'spin'"),
    ],
)
def test_bad_settings_are_one_line_and_nothing_is_written(project, capsys, command, section, values, expected):
    set_section(project, section, **values)
    with pytest.raises(SystemExit) as exited:
        run(cli, command, prog_name="featpipe")
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (project / "data/models").exists() and not (project / "reports").exists()

