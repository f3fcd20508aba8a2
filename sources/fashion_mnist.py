"""Fashion-MNIST: 70,000 grayscale 28x28 images of clothing in 10 classes.

Looked for, in order: ``path`` when given (and nowhere else then); Debian's
``dataset-fashion-mnist`` package; Keras' dataset cache; Keras' download.
"""

from pathlib import Path

import numpy as np

from plumbing.errors import FeatpipeError
from sources import keras_cache
from sources.dataset import Dataset, numbered_ids
from sources.idx import read_idx
from sources.registry import register_source
from storage.image_store import ImageSplit

NAME = "fashion_mnist"
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_SHAPE = (28, 28)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
DEBIAN_COPY = Path("/usr/share/datasets/fashion-mnist")


def default_locations():
    """Folders searched when no path is given, in order."""
    return [DEBIAN_COPY, keras_cache.keras_datasets_dir() / "fashion-mnist"]


@register_source(NAME)
def load_fashion_mnist(path, settings):
    """Read Fashion-MNIST at its native 28x28x1; ``settings`` are not needed.

    Returns
    -------
    Dataset with 60,000 train and 10,000 test images of shape (28, 28, 1).
    """
    advice = (
        f"Install Debian's copy (apt-get install dataset-fashion-mnist) or set data.path (--path) "
        f"to a folder holding {_all_names()}"
    )
    return keras_cache.load_builtin(NAME, path, default_locations(), missing=_missing_files, read=read_fashion_mnist,
                                    from_keras=_from_keras, advice=advice)


def read_fashion_mnist(folder):
    """Read the four IDX files in ``folder`` (gzipped, or already unpacked)."""
    missing = _missing_files(folder)
    if missing:
        raise FeatpipeError(
            f"{NAME}: {folder} lacks {', '.join(missing)}; expected the four Fashion-MNIST files {_all_names()}"
        )
    splits = {}
    for split, (images_name, labels_name) in FILES.items():
        images = read_idx(_find(folder, images_name), ndim=3)
        labels = read_idx(_find(folder, labels_name), ndim=1)
        splits[split] = _checked_split(images, labels, f"{folder}/{images_name}")
    return Dataset(NAME, list(CLASS_NAMES), splits, location=str(folder))


def _checked_split(images, labels, where):
    """An ImageSplit of ``images`` (n, 28, 28) and ``labels`` (n,), after checking they belong together."""
    if images.shape[1:] != IMAGE_SHAPE:
        raise FeatpipeError(f"{NAME}: {where}: images of {images.shape[1:]}, expected {IMAGE_SHAPE}")
    if len(images) != len(labels):
        raise FeatpipeError(f"{NAME}: {where}: {len(images)} images but {len(labels)} labels")
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise FeatpipeError(f"{NAME}: {where}: label {labels.max()} found, expected 0-{len(CLASS_NAMES) - 1}")
    return ImageSplit(images[..., np.newaxis], labels, numbered_ids(NAME, len(labels)))


def _find(folder, name):
    """``folder/name``, or its unpacked twin without ``.gz``."""
    packed = folder / name
    return packed if packed.is_file() else folder / name.removesuffix(".gz")


def _missing_files(folder):
    return [name for pair in FILES.values() for name in pair if not _find(folder, name).is_file()]


def _all_names():
    return ", ".join(name for pair in FILES.values() for name in pair)


def _from_keras(arrays):
    (x_train, y_train), (x_test, y_test) = arrays
    splits = {
        "train": _checked_split(np.asarray(x_train, np.uint8), np.ravel(y_train), "Keras train set"),
        "test": _checked_split(np.asarray(x_test, np.uint8), np.ravel(y_test), "Keras test set"),
    }
    return Dataset(NAME, list(CLASS_NAMES), splits, location="Keras download")
