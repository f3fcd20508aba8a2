"""The cifar10 source: batch files as Python 2 wrote them, and pickles that must be refused."""

import os
import pickle
import struct

import numpy as np
import pytest

from plumbing.errors import FeatpipeError
from sources import cifar10, keras_cache, prepare_dataset
from sources.cifar10 import read_batch

PER_BATCH = 10  # one image of each class


def short_string(data):
    """SHORT_BINSTRING: how Python 2 pickled a str (bytes) under 256 bytes."""
    return b"U" + bytes([len(data)]) + data


def py2_array(array):
    """The opcodes cPickle (protocol 2) wrote for a uint8 ndarray, as in the 2009 CIFAR-10 files."""
    shape = b"".join(b"J" + struct.pack("<i", n) for n in array.shape)
    dtype = (
        b"cnumpy\ndtype\n" + short_string(b"u1") + b"K\x00K\x01\x87R"
        + b"(K\x03" + short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )  # fmt: skip
    raw = array.tobytes()
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short_string(b"b") + b"\x87R"
        + b"(K\x01(" + shape + b"t" + dtype + b"\x89T" + struct.pack("<i", len(raw)) + raw + b"tb"
    )  # fmt: skip


def py2_batch(data, labels):
    """A whole batch file: {'batch_label', 'labels', 'data', 'filenames'} pickled by Python 2."""
    label_list = b"](" + b"".join(b"K" + bytes([label]) for label in labels) + b"e"
    names = b"](" + b"".join(short_string(f"img_{i}.png".encode()) for i in range(len(labels))) + b"e"
    return (
        b"\x80\x02}("
        + short_string(b"batch_label") + short_string(b"training batch 1 of 5")
        + short_string(b"labels") + label_list
        + short_string(b"data") + py2_array(data)
        + short_string(b"filenames") + names
        + b"u."
    )  # fmt: skip


def write_cifar10(folder, seed=0):
    """Write a cifar-10-batches-py folder of 5 + 1 batches of 10 images; return the test images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    written = {}
    for name in cifar10.BATCHES["train"] + cifar10.BATCHES["test"]:
        labels = rng.permutation(10)
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        (folder / name).write_bytes(py2_batch(data, labels))
        written[name] = (data, labels)
    (folder / "batches.meta").write_bytes(b"\x80\x02}.")
    return written


@pytest.fixture
def cifar_parent(tmp_path):
    written = write_cifar10(tmp_path / "cifar-10-batches-py")
    return tmp_path, written


def test_py2_batch_is_read_as_channels_last_images(cifar_parent):
    parent, written = cifar_parent
    data, labels = written["test_batch"]
    images, got_labels = read_batch(parent / "cifar-10-batches-py" / "test_batch")
    assert images.shape == (10, 32, 32, 3) and images.dtype == np.uint8
    assert np.array_equal(got_labels, labels)
    # Row layout: red plane, green plane, blue plane, each 32x32 row-major.
    assert images[3, 0, 1, 0] == data[3, 1] and images[3, 0, 1, 2] == data[3, 2048 + 1]
    assert images[3, 2, 0, 1] == data[3, 1024 + 2 * 32]


def test_reads_from_the_batch_folder_or_its_parent(cifar_parent):
    parent, written = cifar_parent
    for path in (parent, parent / "cifar-10-batches-py"):
        dataset = prepare_dataset("cifar10", path)
        assert dataset.splits["train"].images.shape == (50, 32, 32, 3)
        assert dataset.splits["test"].ids[-1] == "cifar10:9"
        assert dataset.class_names[0] == "airplane" and len(dataset.class_names) == 10
    assert np.array_equal(dataset.splits["train"].labels[10:20], written["data_batch_2"][1])


def test_numpy2_protocol3_pickles_are_read_too(tmp_path):
    data = np.arange(2 * 3072, dtype=np.uint32).astype(np.uint8).reshape(2, 3072)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [1, 2]}, protocol=3))
    images, labels = read_batch(path)
    assert labels.tolist() == [1, 2] and images[1, 0, 0, 0] == data[1, 0]


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_calls_anything_else_is_refused_unrun(cifar_parent, tmp_path):
    parent, _ = cifar_parent
    marker = tmp_path / "pwned"
    batch = parent / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": Payload(marker), b"labels": []}, protocol=3))
    with pytest.raises(FeatpipeError, match=r"data_batch_3 is not a CIFAR-10 batch: refers to (posix|os)\.system"):
        prepare_dataset("cifar10", parent)
    assert not marker.exists()


def test_wrong_shapes_and_labels_are_named(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(py2_batch(np.zeros((2, 100), dtype=np.uint8), [0, 1]))
    with pytest.raises(FeatpipeError, match=r"'data' must be uint8 of shape \(n, 3072\), got uint8 \(2, 100\)"):
        read_batch(path)
    path.write_bytes(py2_batch(np.zeros((2, 3072), dtype=np.uint8), [0, 12]))
    with pytest.raises(FeatpipeError, match=r"expected 2 labels in 0-9, got 2 in 0-12"):
        read_batch(path)
    path.write_bytes(b"\x80\x02]q\x00.")
    with pytest.raises(FeatpipeError, match=r"holds a list, not a dict"):
        read_batch(path)
    path.write_bytes(b"garbage")
    with pytest.raises(FeatpipeError, match=r"is not a CIFAR-10 batch"):
        read_batch(path)


def test_missing_batches_are_named(cifar_parent):
    parent, _ = cifar_parent
    (parent / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FeatpipeError, match=r"lacks data_batch_4; expected the cifar-10-batches-py folder"):
        prepare_dataset("cifar10", parent)


def test_missing_everywhere_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(name):
        raise keras_cache.DownloadFailed("URL fetch failure")

    monkeypatch.setattr(keras_cache, "download_with_keras", offline)
    with pytest.raises(FeatpipeError, match=r"no local copy found \(looked in .*keras/datasets/cifar-10-batches-py\)"):
        prepare_dataset("cifar10")


def test_keras_cache_is_found(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    write_cifar10(tmp_path / "keras" / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py")
    dataset = prepare_dataset("cifar10", seed=1, train_size=20, test_size=10)
    assert dataset.class_counts("train").tolist() == [2] * 10


def test_keras_download_in_channels_first_is_turned_channels_last(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    images = np.zeros((10, 3, 32, 32), dtype=np.uint8)
    images[:, 0] = 200  # red plane
    labels = np.arange(10).reshape(10, 1)
    monkeypatch.setattr(keras_cache, "download_with_keras", lambda name: ((images, labels), (images, labels)))
    dataset = prepare_dataset("cifar10")
    assert dataset.location == "Keras download"
    assert dataset.splits["test"].images.shape == (10, 32, 32, 3)
    assert dataset.splits["test"].images[0, 5, 5].tolist() == [200, 0, 0]
