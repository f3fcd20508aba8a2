"""The image store and feature file contracts, and write-aside-then-rename."""

import h5py
import numpy as np
import pytest

from plumbing.atomic import atomic_output, partial_path
from plumbing.errors import FeatpipeError
from storage.feature_store import FeatureWriter, load_features, read_metadata
from storage.image_store import ImageStore, content_fingerprint, write_image_store
from tests.conftest import CLASS_NAMES, make_splits


def test_image_store_round_trip(tiny_image_store):
    with ImageStore(tiny_image_store) as store:
        assert store.class_names == CLASS_NAMES
        assert store.num_rows("train") == 12 and store.num_rows("test") == 6
        assert store.image_shape() == (16, 16, 1)
        assert store.images("train", 2, 5).dtype == np.uint8
        np.testing.assert_array_equal(store.images("train", 2, 5), make_splits()["train"].images[2:5])
        assert store.ids("test")[0] == "tiny-test:0"
        assert store.skipped() == []
        assert store.fingerprint == content_fingerprint(make_splits(), CLASS_NAMES)


def test_fingerprint_changes_with_any_pixel():
    splits = make_splits()
    before = content_fingerprint(splits, CLASS_NAMES)
    splits["test"].images[0, 0, 0, 0] ^= 1
    assert content_fingerprint(splits, CLASS_NAMES) != before


def test_skipped_table_is_stored(tmp_path):
    path = tmp_path / "images.h5"
    skipped = [("cats/broken.jpg", "truncated file"), ("dogs/empty.png", "empty file")]
    write_image_store(path, make_splits(), source="folder", class_names=CLASS_NAMES, seed=1, skipped=skipped)
    with ImageStore(path) as store:
        assert store.skipped() == skipped
        assert store.attrs["num_skipped"] == 2


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "image store not found: {path} (run `featpipe prepare` first)"),
        ("not_hdf5", "image store {path} is not a readable HDF5 file; rerun `featpipe prepare`"),
        ("no_group", "image store {path} lacks train/images, labels or ids; rerun `featpipe prepare`"),
    ],
)
def test_image_store_refuses_damaged_files(tmp_path, damage, message):
    path = tmp_path / "images.h5"
    if damage == "not_hdf5":
        path.write_text("hello")
    elif damage == "no_group":
        with h5py.File(path, "w") as file:
            file.create_group("train")
    with pytest.raises(FeatpipeError) as refused:
        ImageStore(path)
    assert str(refused.value) == message.format(path=path)


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out" / "file.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(final) as aside:
            aside.write_text("half")
            raise RuntimeError("boom")
    assert not final.exists() and not partial_path(final).exists()
    with atomic_output(final) as aside:
        aside.write_text("whole")
    assert final.read_text() == "whole"


def _writer(path, dim=5, **attrs):
    splits = {"train": (np.array([0, 1, 2, 0]), ["a", "b", "c", "d"]), "test": (np.array([1, 2]), ["e", "f"])}
    base = {"backbone": "fake", "layer": "x", "feature_dim": dim, "class_names": CLASS_NAMES, "weights": "none"}
    return FeatureWriter(path, attrs=base | attrs, splits=splits)


def test_feature_writer_resumes_from_whole_chunks_and_finishes(tmp_path):
    path = tmp_path / "fake-x.h5"
    dim = 1 << 16  # a MiB of float32 rows is 4 of them: chunks of 4 rows
    rows = np.random.default_rng(0).random((9, dim), dtype=np.float32)
    splits = {"train": (np.array([0, 1, 2, 0, 1, 2]), list("abcdef")), "test": (np.array([1, 2, 0]), list("ghi"))}
    attrs = {"backbone": "fake", "layer": "x", "feature_dim": dim, "class_names": CLASS_NAMES, "weights": "none"}
    writer = FeatureWriter(path, attrs=attrs, splits=splits)
    writer.append("train", rows[:5])  # a whole chunk goes to disk; one row waits for the next
    writer.close()  # as if killed: the .partial stays, with the whole chunk
    assert not path.exists() and partial_path(path).exists()

    writer = FeatureWriter(path, attrs=attrs, splits=splits)
    assert writer.rows_done("train") == 4
    writer.append("train", rows[4:6])
    writer.append("test", rows[6:])
    writer.finish()
    loaded = load_features(path, "train")
    np.testing.assert_array_equal(loaded.features, rows[:6])
    assert loaded.ids == list("abcdef") and loaded.class_names == CLASS_NAMES
    assert read_metadata(path)["complete"] is True
    lazy = load_features(path, "test", lazy=True)
    np.testing.assert_array_equal(lazy.features.compute(), rows[6:])


def test_feature_writer_reuses_complete_and_refuses_other_settings(tmp_path):
    path = tmp_path / "fake-x.h5"
    writer = _writer(path)
    writer.append("train", np.zeros((4, 5)))
    writer.append("test", np.zeros((2, 5)))
    writer.finish()
    assert _writer(path).already_complete
    with pytest.raises(FeatpipeError, match="weights='none'.*'imagenet'.*--overwrite"):
        _writer(path, weights="imagenet")
    replacing = FeatureWriter(path, attrs={"backbone": "fake", "layer": "x", "feature_dim": 5, "weights": "imagenet"},
                              splits={"train": ([0], ["a"]), "test": ([1], ["b"])}, overwrite=True)
    assert not replacing.already_complete
    replacing.close()


def test_finish_refuses_missing_rows(tmp_path):
    writer = _writer(tmp_path / "fake-x.h5")
    writer.append("train", np.zeros((4, 5)))
    with pytest.raises(RuntimeError, match="test: 0 of 2 rows"):
        writer.finish()
    writer.close()


def test_load_features_refuses_incomplete_and_missing(tmp_path):
    with pytest.raises(FeatpipeError, match="feature file not found"):
        load_features(tmp_path / "nope.h5")
    writer = _writer(tmp_path / "fake-x.h5")
    writer.close()
    with h5py.File(partial_path(tmp_path / "fake-x.h5")) as file:
        assert file.attrs["complete"] == False  # noqa: E712 (numpy bool)
    with pytest.raises(FeatpipeError, match="incomplete"):
        load_features(partial_path(tmp_path / "fake-x.h5"))


def test_a_damaged_chunk_names_the_image_store(tmp_path):
    from storage.chunkio import CodecPool

    path = tmp_path / "images.h5"
    write_image_store(path, make_splits(n_train=12, n_test=6), source="tiny", class_names=CLASS_NAMES, seed=0)
    with h5py.File(path, "r") as file:
        where = file["train/images"].id.get_chunk_info(0)
    with open(path, "r+b") as raw:  # a bad sector, a bad copy: the chunk's bytes are garbage
        raw.seek(where.byte_offset)
        raw.write(b"\xff" * where.size)
    with ImageStore(path) as store:
        for read in (lambda: store.images("train"), lambda: list(store.iter_images("train", pool=CodecPool(2)))):
            with pytest.raises(FeatpipeError) as refused:
                read()
            assert str(refused.value).startswith(f"image store {path}: train/images can't be read (")
            assert str(refused.value).endswith("; rerun `featpipe prepare`") and "\n" not in str(refused.value)
