"""Fixtures shared across test modules: tiny data made in tmp_path, in milliseconds."""

import os
import socket

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


def separable_features(labels, seed, n_features=8):
    """Class-dependent features: a class's own coordinate is high, plus noise. float32 [N, D]."""
    rng = np.random.default_rng(seed)
    features = rng.normal(0.0, 0.6, size=(len(labels), n_features)).astype(np.float32)
    features[np.arange(len(labels)), labels] += 3.0
    return features


def offline_keras_env(keras_home):
    """Environment for a subprocess whose Keras has an empty cache at ``keras_home`` and no network.

    Keras fixes its home folder from ``KERAS_HOME`` when imported, and
    downloads with urllib, which honours the proxy variables: a proxy on a
    port nobody listens on makes every download fail at once, online or not.
    """
    closed = f"http://127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items() if key.lower() != "no_proxy"}
    return {**env, "KERAS_HOME": str(keras_home), "http_proxy": closed, "https_proxy": closed,
            "HTTP_PROXY": closed, "HTTPS_PROXY": closed}


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
