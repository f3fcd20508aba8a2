"""End to end: `dvc repro` on a copy of this repository, with tiny data and random weights.

The copy gets a folder of a few dozen small images made here and a params
file that keeps every stage to seconds; then the whole pipeline runs as a
user runs it, a second `dvc repro` must do nothing, and a change to one
classifier's params must rerun only that classifier and the report.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"stripes": 0, "dots": 1, "plain": 2}

pytestmark = pytest.mark.slow


def _draw(kind, rng):
    image = np.full((32, 32, 3), 40, np.uint8) + rng.integers(0, 30, (32, 32, 3), dtype=np.uint8)
    if kind == "stripes":
        image[::4] = 230
    elif kind == "dots":
        image[::6, ::6] = 250
    return Image.fromarray(image)


def _image_folder(root, per_class=12):
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            _draw(kind, rng).save(root / kind / f"{i}.png")
    return root


def _tiny_params(images):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"] = 0
    params["data"].update(source="folder", path=str(images), image_size=32, train_size=None, test_size=None, test_fraction=0.25)
    # MobileNetV2 runs about fifteen times as fast as VGG16 on a CPU; the stages don't care which.
    params["extract"].update(backbones=[{"name": "mobilenet_v2", "layer": "avg_pool"}], weights="none", batch_size=9)
    params["baseline"].update(n_estimators=10, n_jobs=1)
    params["train"]["rf"].update(n_estimators=10, n_jobs=1)
    params["train"]["dense"].update(epochs=3, hidden_units=[16])
    params["curves"].update(per_class=[2, 4], repeats=2)
    params["explain"].update(per_class=1, occlusion={"patch": 16, "stride": 16}, lime={"samples": 10, "segments": 4})
    params["scratch"].update(filters=[4], dense_units=8, epochs=2)
    params["finetune"].update(input_size=32, epochs=1, batch_size=9)
    return params


def _copy_repo(target):
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in listed:
        source = REPO / name
        if source.is_file() and not name.startswith(("reports/", "data/")):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / "data").mkdir(exist_ok=True)
    git = ["git", "-c", "user.name=featpipe-test", "-c", "user.email=test@featpipe.invalid"]
    subprocess.run(git + ["init", "-q"], cwd=target, check=True)
    subprocess.run(git + ["add", "-A"], cwd=target, check=True)
    subprocess.run(git + ["commit", "-qm", "copy"], cwd=target, check=True)


def _dvc(project, *args):
    # The copy's own code runs its stages, so that an edit there changes what they compute.
    env = dict(
        os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
        PYTHONPATH=str(project),
    )
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def _stages_run(output):
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


def test_dvc_repro_runs_the_whole_pipeline_then_nothing(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _copy_repo(project)
    params = _tiny_params(_image_folder(tmp_path / "images"))
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    first = _dvc(project, "repro")
    trains = [f"train@features0-{name}" for name in params["train"]["classifiers"]]
    assert _stages_run(first) == sorted(["prepare", "extract@0", "baseline", *trains, "scratch", "curves", "explain", "report"])
    report = (project / "reports" / "report.md").read_text()
    assert "random weights" in report[:400].lower()  # said at the top, before any number
    assert "## How many labels?" in report and "![Learning curves](curves/curves.png)" in report
    assert "| mobilenet_v2-avg_pool-svm | " in report and "embedding-mobilenet_v2-avg_pool.png" in report
    assert "## Where the models look" in report and "![Explanations of pixel_rf](explanations/pixel_rf.png)" in report
    for model in ("pixel_rf", "mobilenet_v2-avg_pool-rf", "mobilenet_v2-avg_pool-svm", "mobilenet_v2-avg_pool-dense", "scratch-cnn"):
        assert model in report
        assert (project / "reports" / "metrics" / f"{model}.json").exists()
    assert (project / "reports" / "plots" / "accuracy.png").stat().st_size > 0
    assert "accuracy" in _dvc(project, "metrics", "show")
    _dvc(project, "plots", "show", "--json")  # the learning curve's custom template renders

    assert _stages_run(_dvc(project, "repro")) == []

    params["train"]["rf"]["n_estimators"] = 12
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stages_run(_dvc(project, "repro")) == ["curves", "explain", "report", "train@features0-rf"]

    params["curves"]["repeats"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert _stages_run(_dvc(project, "repro")) == ["curves", "report"]

    # The resize and rescale are code, not params: editing them reruns extract, and what follows
    # it when the features change (here the resize's description, stored in the feature file).
    with open(project / "features" / "preprocessing.py", "a") as module:
        module.write('\nRESIZE_DESCRIPTION += " (edited)"\n')
    assert _stages_run(_dvc(project, "repro")) == sorted(["extract@0", *trains, "scratch", "curves", "explain", "report"])

    # Fine-tuning is one experiment away; it adds its stage, its explanations and its row.
    ran = _stages_run(_dvc(project, "exp", "run", "-S", "finetune.backbones=[mobilenet_v2]"))
    assert ran == ["explain", "finetune@mobilenet_v2", "report"]
    assert "mobilenet_v2-finetune" in (project / "reports" / "report.md").read_text()
    assert _stages_run(_dvc(project, "repro")) == []
