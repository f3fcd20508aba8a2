"""The fashion_mnist source: IDX files written by a fixture, the search order, clear errors."""

import gzip

import numpy as np
import pytest

from plumbing.errors import FeatpipeError
from sources import fashion_mnist, keras_cache, prepare_dataset
from sources.idx import read_idx

TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 2


def idx_bytes(array):
    """An IDX file of unsigned bytes: magic 0x0000080<ndim>, big-endian dims, the values."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(folder, seed=0, compress=True):
    """Write the four Fashion-MNIST files with 3 train and 2 test images per class."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class)).astype(np.uint8)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        arrays[split] = (images, labels)
        for name, array in zip(fashion_mnist.FILES[split], (images, labels)):
            path = folder / (name if compress else name.removesuffix(".gz"))
            path.write_bytes(gzip.compress(idx_bytes(array)) if compress else idx_bytes(array))
    return arrays


@pytest.fixture
def fashion_folder(tmp_path):
    folder = tmp_path / "fashion"
    return folder, write_fashion_mnist(folder)


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No copy in the usual places, and a download that fails as it does offline."""
    looked_in = [tmp_path / "debian", tmp_path / "keras" / "fashion-mnist"]
    monkeypatch.setattr(fashion_mnist, "default_locations", lambda: looked_in)

    def offline(name):
        raise keras_cache.DownloadFailed("URL fetch failure: no network")

    monkeypatch.setattr(keras_cache, "download_with_keras", offline)
    return looked_in


def test_reads_every_image_label_and_id(fashion_folder):
    folder, arrays = fashion_folder
    dataset = prepare_dataset("fashion_mnist", folder)
    assert dataset.class_names[0] == "T-shirt/top" and dataset.class_names[9] == "Ankle boot"
    for split, (images, labels) in arrays.items():
        got = dataset.splits[split]
        assert got.images.shape == (len(labels), 28, 28, 1) and got.images.dtype == np.uint8
        assert np.array_equal(got.images[..., 0], images)
        assert np.array_equal(got.labels, labels)
        assert got.ids[:2] == ["fashion_mnist:0", "fashion_mnist:1"]


def test_reads_unpacked_files_too(tmp_path):
    arrays = write_fashion_mnist(tmp_path / "plain", compress=False)
    dataset = prepare_dataset("fashion_mnist", tmp_path / "plain")
    assert np.array_equal(dataset.splits["test"].labels, arrays["test"][1])


def test_subsets_are_stratified(fashion_folder):
    folder, _ = fashion_folder
    dataset = prepare_dataset("fashion_mnist", folder, seed=5, train_size=20, test_size=10)
    assert dataset.class_counts("train").tolist() == [2] * 10
    assert dataset.class_counts("test").tolist() == [1] * 10


def test_searches_the_usual_places_in_order(tmp_path, nowhere):
    write_fashion_mnist(nowhere[1])
    dataset = prepare_dataset("fashion_mnist")
    assert dataset.location == str(nowhere[1])


def test_missing_everywhere_says_where_it_looked_and_what_to_do(nowhere):
    with pytest.raises(FeatpipeError) as error:
        prepare_dataset("fashion_mnist")
    message = str(error.value)
    assert "\n" not in message
    assert str(nowhere[0]) in message and str(nowhere[1]) in message
    assert "URL fetch failure" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.path" in message


def test_given_path_is_the_only_place_looked(tmp_path, nowhere):
    write_fashion_mnist(nowhere[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatpipeError, match=r"empty lacks train-images-idx3-ubyte.gz, .*t10k-labels-idx1-ubyte.gz"):
        prepare_dataset("fashion_mnist", tmp_path / "empty")
    with pytest.raises(FeatpipeError, match=r"data path .*absent does not exist"):
        prepare_dataset("fashion_mnist", tmp_path / "absent")


def test_bad_magic_number_is_named(fashion_folder):
    folder, _ = fashion_folder
    labels = folder / "train-labels-idx1-ubyte.gz"
    # An images file where labels belong: magic 0x803 instead of 0x801.
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28)))))
    with pytest.raises(FeatpipeError, match=r"magic number 0x00000803, expected 0x00000801"):
        prepare_dataset("fashion_mnist", folder)


def test_truncated_data_is_named(fashion_folder):
    folder, _ = fashion_folder
    images = folder / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(FeatpipeError, match=r"t10k-images-idx3-ubyte.gz: truncated: 15580 data bytes, expected 15680"):
        prepare_dataset("fashion_mnist", folder)


def test_truncated_gzip_is_named(fashion_folder):
    folder, _ = fashion_folder
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:500])
    with pytest.raises(FeatpipeError, match=r"train-images-idx3-ubyte.gz: not a complete gzip file"):
        prepare_dataset("fashion_mnist", folder)


def test_images_and_labels_must_agree(fashion_folder):
    folder, _ = fashion_folder
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7))))
    with pytest.raises(FeatpipeError, match=r"20 images but 7 labels"):
        prepare_dataset("fashion_mnist", folder)


def test_read_idx_refuses_a_short_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(FeatpipeError, match=r"too short for an IDX header"):
        read_idx(path, ndim=1)


def test_keras_download_is_the_last_resort(nowhere, monkeypatch):
    rng = np.random.default_rng(1)
    train = (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20) % 10)
    test = (rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), np.arange(10))
    monkeypatch.setattr(keras_cache, "download_with_keras", lambda name: (train, test))
    dataset = prepare_dataset("fashion_mnist")
    assert dataset.location == "Keras download"
    assert np.array_equal(dataset.splits["train"].images[..., 0], train[0])


@pytest.mark.network
def test_real_keras_download(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(fashion_mnist, "default_locations", lambda: [])
    dataset = prepare_dataset("fashion_mnist", train_size=100, test_size=50)
    assert dataset.location == "Keras download" and dataset.class_counts("train").tolist() == [10] * 10
