"""`featpipe prepare` as a user runs it: params, options, the store written, the summary, one-line errors."""

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import cli, run
from plumbing.atomic import partial_path
from storage.image_store import ImageStore

STORE = Path("data/prepared/images.h5")
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 4),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 2),
}


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def write_fashion_mnist(folder):
    """Fashion-MNIST files with 4 train and 2 test images per class."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for images_name, labels_name, per_class in FASHION_FILES.values():
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        write_idx(folder / images_name, rng.integers(0, 256, size=(len(labels), 28, 28)))
        write_idx(folder / labels_name, labels)


def write_params(project, **data):
    (project / "params.yaml").write_text(yaml.safe_dump({"seed": 42, "data": data}))


@pytest.fixture
def fashion_project(in_tmp_project):
    """A project whose params.yaml points at tiny Fashion-MNIST files."""
    write_fashion_mnist(in_tmp_project / "fashion")
    write_params(in_tmp_project, source="fashion_mnist", path="fashion", train_size=20, test_size=10)
    return in_tmp_project


@pytest.fixture
def image_folder(in_tmp_project):
    """Two classes of three images, plus two broken files."""
    for name, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (in_tmp_project / "photos" / name).mkdir(parents=True)
        for index in range(3):
            Image.new("RGB", (20 + index, 12), colour).save(in_tmp_project / "photos" / name / f"{index}.png")
    (in_tmp_project / "photos" / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (in_tmp_project / "photos" / "blue" / "empty.png").write_bytes(b"")
    write_params(in_tmp_project, source="folder", path="photos", train_size=None, test_size=None, image_size=8)
    return in_tmp_project


def invoke(*args):
    result = CliRunner().invoke(cli, ["prepare", *args])
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}{result.exception!r}"
    return result


def fails(capsys, *args):
    """Run like the console script; return the one error line after checking exit code 2."""
    with pytest.raises(SystemExit) as exit_info:
        run(cli, ["prepare", *args])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("featpipe: error: ")
    return lines[0]


def test_writes_the_store_the_params_describe(fashion_project):
    result = invoke()
    with ImageStore(STORE) as store:
        attrs = store.attrs
        assert attrs["source"] == "fashion_mnist" and attrs["seed"] == 42
        assert attrs["train_size"] == 20 and attrs["test_size"] == 10 and attrs["num_skipped"] == 0
        assert store.class_names[0] == "T-shirt/top" and len(store.class_names) == 10
        assert store.images("train").shape == (20, 28, 28, 1) and store.images("train").dtype == np.uint8
        assert np.bincount(store.labels("train")).tolist() == [2] * 10
        assert np.bincount(store.labels("test")).tolist() == [1] * 10
        assert all(image_id.startswith("fashion_mnist:") for image_id in store.ids("test"))
        assert store.skipped() == []
    assert "T-shirt/top" in result.output and f"wrote {STORE}" in result.output
    assert not partial_path(STORE).exists()


def test_same_params_give_the_same_store(fashion_project):
    invoke("--out", "one.h5")
    invoke("--out", "two.h5")
    with ImageStore("one.h5") as one, ImageStore("two.h5") as two:
        assert one.fingerprint == two.fingerprint
        assert one.ids("train") == two.ids("train")


def test_options_override_params(fashion_project):
    invoke("--train-size", "all", "--test-size", "15", "--seed", "3")
    with ImageStore(STORE) as store:
        assert store.attrs["train_size"] == -1 and store.attrs["test_size"] == 15 and store.attrs["seed"] == 3
        assert store.num_rows("train") == 40 and store.num_rows("test") == 15


def test_folder_store_keeps_good_images_and_lists_broken_ones(image_folder):
    result = invoke("--max-bad-fraction", "0.5")
    with ImageStore(STORE) as store:
        assert store.class_names == ["blue", "red"]
        assert store.image_shape() == (8, 8, 3)
        assert store.num_rows("train") + store.num_rows("test") == 6
        skipped = dict(store.skipped())
        assert sorted(skipped) == ["blue/empty.png", "red/broken.jpg"]
        assert skipped["blue/empty.png"] == "empty file" and "corrupt" in skipped["red/broken.jpg"]
        assert store.attrs["num_skipped"] == 2
        red = store.images("test")[store.labels("test") == 1]
        assert red[..., 0].min() > 240 and red[..., 2].max() < 15
    assert "skipped 2 unreadable file(s)" in result.output and "blue/empty.png: empty file" in result.output


def test_too_many_broken_files_leave_no_store(image_folder, capsys):
    line = fails(capsys)
    assert "cannot be read, more than max_bad_fraction=0.05" in line
    assert not STORE.exists() and not partial_path(STORE).exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--train-size", "500"], "train_size=500 is more than the 40 train images of fashion_mnist"),
        (["--train-size", "0"], "data.train_size: expected an integer >= 1"),
        (["--train-size", "many"], "expected a whole number or 'all', got 'many'"),
        (["--source", "mnist"], "data.source: expected one of 'fashion_mnist', 'cifar10', 'folder'"),
        (["--path", "nowhere"], "data path nowhere does not exist"),
        (["--source", "folder", "--path", "fashion"], "found 0 class folder(s)"),
        (["--params", "missing.yaml"], "params file not found: missing.yaml"),
        (["--test-fraction", "1.5"], "data.test_fraction: expected a number >= 0.0 and < 1.0"),
        (["--test-fraction", "nan"], "data.test_fraction: expected a number >= 0.0 and < 1.0, got nan"),
        (["--seed", "99999999999999999999"], "seed: expected an integer >= 0 and <= 4294967295"),
        (["--params", "noise.bin"], "params: noise.bin is not UTF-8 text"),
    ],
)
def test_user_mistakes_end_with_one_line_and_code_2(fashion_project, capsys, args, expected):
    (fashion_project / "noise.bin").write_bytes(bytes(range(256)) * 4)
    assert expected in fails(capsys, *args)
    assert not STORE.exists()


def test_console_script_error_has_no_traceback(fashion_project):
    done = subprocess.run(
        [sys.executable, "-c", "from pipeline.cli import main; main()", "prepare", "--test-size", "21"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "featpipe: error: test_size=21 is more than the 20 test images of fashion_mnist"


def test_importing_prepare_loads_no_deep_learning_framework():
    code = "import sys, pipeline.prepare, sources; print(sorted({'keras', 'tensorflow'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


REAL_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(
    not (REAL_FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason=f"no Fashion-MNIST in {REAL_FASHION_MNIST} (apt-get install dataset-fashion-mnist)",
)
def test_real_fashion_mnist_subset_is_balanced(in_tmp_project):
    write_params(in_tmp_project, source="fashion_mnist", path=str(REAL_FASHION_MNIST), train_size=2000, test_size=1000)
    invoke()
    with ImageStore(STORE) as store:
        assert store.image_shape() == (28, 28, 1)
        assert np.bincount(store.labels("train")).tolist() == [200] * 10
        assert np.bincount(store.labels("test")).tolist() == [100] * 10
        assert len(set(store.ids("train"))) == 2000
        assert store.images("test").mean() > 20, "images should not be blank"
