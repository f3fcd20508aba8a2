"""Every Python block of README.md, data/README.md and docs/ runs, against a tiny project made here.

The blocks are what analysts copy: reading a feature file with
``load_features`` or h5py alone, loading a model folder and applying it. The
project has the files they name, from a tiny ``.keras`` backbone instead of
VGG16 (seconds, not minutes): each block runs with ``vgg16-fc2`` read as
``tiny-feat``, and with ``images`` set to the image store's test images, as
the blocks' comments describe it.
"""

import re
from pathlib import Path

import pytest

from storage.image_store import ImageStore
from tests.conftest import invoke_ok, tiny_backbone_project

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "data" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
PARAMS = {
    "seed": 3,
    "extract": {"backbones": [{"name": "tiny", "layer": "feat", "file": "models/tiny.keras"}], "batch_size": 8},
    "train": {"classifiers": ["rf", "svm"], "rf": {"n_estimators": 10, "n_jobs": 1}},
}


def python_blocks():
    """``(doc name and block number, code)`` of every ```python block."""
    return [(f"{doc.relative_to(REPO)}#{number}", code)
            for doc in DOCS for number, code in enumerate(BLOCK.findall(doc.read_text()), start=1)]


BLOCKS = python_blocks()


def test_the_docs_have_python_blocks_to_run():
    # The pattern must find the blocks: an empty list would make the test below pass without running any.
    assert {name.split("#")[0] for name, _ in BLOCKS} >= {"README.md", "data/README.md", "docs/predict.md"}, [name for name, _ in BLOCKS]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with a feature file (``tiny-feat.h5``) and the rf and svm trained on it."""
    root = tiny_backbone_project(tmp_path_factory.mktemp("docs"), PARAMS, dense={"feat": 8})
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for stage in ("extract", "train"):
            invoke_ok(stage)
    with ImageStore(root / "data/prepared/images.h5") as store:
        images = store.images("test")
    return root, images


@pytest.mark.parametrize("code", [code for _, code in BLOCKS], ids=[name for name, _ in BLOCKS])
def test_the_block_runs(project, monkeypatch, code):
    root, images = project
    monkeypatch.chdir(root)
    exec(compile(code.replace("vgg16-fc2", "tiny-feat"), "<doc block>", "exec"), {"images": images})
