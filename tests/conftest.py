"""Fixtures shared across test modules: tiny data made in tmp_path, in milliseconds."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from features.image_store import ImageSplit, write_image_store  # noqa: E402

CLASS_NAMES = ["circle", "square", "cross"]


def make_splits(n_train=12, n_test=6, size=16, channels=1, seed=0):
    """Random uint8 images with balanced labels, as an image store holds them."""
    rng = np.random.default_rng(seed)

    def split(n, prefix):
        images = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
        labels = np.arange(n) % len(CLASS_NAMES)
        return ImageSplit(images, labels, [f"{prefix}:{i}" for i in range(n)])

    return {"train": split(n_train, "tiny-train"), "test": split(n_test, "tiny-test")}


@pytest.fixture
def tiny_image_store(tmp_path):
    """A 12 + 6 image store of 16x16 grayscale images in 3 classes."""
    path = tmp_path / "data" / "prepared" / "images.h5"
    write_image_store(path, make_splits(), source="tiny", class_names=CLASS_NAMES, seed=0)
    return path


@pytest.fixture
def in_tmp_project(tmp_path, monkeypatch):
    """Run a test from an empty project folder, as DVC runs a stage from the root."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
