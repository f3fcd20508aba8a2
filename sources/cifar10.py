"""CIFAR-10: 60,000 colour 32x32 images in 10 classes, from the ``cifar-10-batches-py`` folder.

The batches are Python pickles. Unpickling runs whatever a file names, so a
restricted unpickler accepts exactly what these batches hold (dicts, lists,
bytes, numbers, and NumPy arrays rebuilt from ``_reconstruct``, ``ndarray``
and ``dtype``) and refuses anything else before it is called.
"""

import pickle

import numpy as np

from plumbing.errors import FeatpipeError
from sources import keras_cache
from sources.dataset import Dataset, numbered_ids
from sources.registry import register_source
from storage.image_store import ImageSplit

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

NAME = "cifar10"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
BATCH_FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
PIXELS_PER_IMAGE = 3 * 32 * 32

# The globals a CIFAR-10 batch refers to: the module name the 2009 files were
# written with and the one NumPy 2 uses, each mapped to the object itself so
# that no import happens on a file's say-so.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`."""

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a CIFAR-10 batch never holds") from None


def default_locations():
    """Folders searched when no path is given: Keras' cache, in its old and new layouts."""
    datasets = keras_cache.keras_datasets_dir()
    return [datasets / BATCH_FOLDER, *sorted(datasets.glob(f"{BATCH_FOLDER}*/{BATCH_FOLDER}"))]


@register_source(NAME)
def load_cifar10(path, settings):
    """Read CIFAR-10 at its native 32x32x3; ``settings`` are not needed.

    ``path`` is the ``cifar-10-batches-py`` folder or the folder holding it.

    Returns
    -------
    Dataset with 50,000 train and 10,000 test images of shape (32, 32, 3).
    """
    advice = (
        f"Set data.path (--path) to an unpacked {BATCH_FOLDER} folder "
        f"(from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz)"
    )
    return keras_cache.load_builtin(NAME, path, default_locations(), missing=_missing_batches, read=_read_folder,
                                    from_keras=_from_keras, advice=advice)


def _read_folder(folder):
    """:func:`read_cifar10` of ``folder``, the batch folder itself or the folder holding it."""
    return read_cifar10(folder if (folder / BATCHES["test"][0]).exists() else folder / BATCH_FOLDER)


def read_cifar10(folder):
    """Read the six batches of a ``cifar-10-batches-py`` folder."""
    missing = _missing_batches(folder)
    if missing:
        raise FeatpipeError(
            f"{NAME}: {folder} lacks {', '.join(missing)}; expected the {BATCH_FOLDER} folder "
            f"(unpack cifar-10-python.tar.gz)"
        )
    splits = {}
    for split, names in BATCHES.items():
        parts = [read_batch(folder / name) for name in names]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        splits[split] = ImageSplit(images, labels, numbered_ids(NAME, len(labels)))
    return Dataset(NAME, list(CLASS_NAMES), splits, location=str(folder))


def read_batch(path):
    """One batch file as (images, labels).

    Returns
    -------
    images : ndarray of shape (n_samples, 32, 32, 3), uint8
    labels : ndarray of shape (n_samples,), int64
    """
    try:
        with open(path, "rb") as stream:
            # encoding="bytes": the files come from Python 2, whose str is bytes.
            batch = BatchUnpickler(stream, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise FeatpipeError(f"{NAME}: {path} is not a CIFAR-10 batch: {error}") from None
    data, labels = _batch_arrays(batch, path)
    # Each row holds the red plane, then green, then blue, each 32x32 row-major.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _batch_arrays(batch, path):
    """The ``data`` (n, 3072) and ``labels`` (n,) of an unpickled batch, after checking them."""
    if not isinstance(batch, dict):
        raise FeatpipeError(f"{NAME}: {path} is not a CIFAR-10 batch: holds a {type(batch).__name__}, not a dict")
    batch = {key.decode() if isinstance(key, bytes) else key: value for key, value in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    is_pixels = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
    if not is_pixels or data.shape[1] != PIXELS_PER_IMAGE:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise FeatpipeError(f"{NAME}: {path}: 'data' must be uint8 of shape (n, {PIXELS_PER_IMAGE}), got {found}")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise FeatpipeError(f"{NAME}: {path}: 'labels' must be a list of integers") from None
    if len(labels) != len(data) or (len(labels) and not 0 <= labels.min() <= labels.max() < len(CLASS_NAMES)):
        raise FeatpipeError(
            f"{NAME}: {path}: expected {len(data)} labels in 0-{len(CLASS_NAMES) - 1}, "
            f"got {len(labels)} in {labels.min() if len(labels) else '-'}-{labels.max() if len(labels) else '-'}"
        )
    return data, labels


def _missing_batches(folder):
    return [name for names in BATCHES.values() for name in names if not (folder / name).is_file()]


def _from_keras(arrays):
    (x_train, y_train), (x_test, y_test) = arrays
    splits = {}
    for split, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        images = np.asarray(images, dtype=np.uint8)
        if images.shape[1:] == (3, 32, 32):  # Keras set to channels_first
            images = images.transpose(0, 2, 3, 1)
        if images.shape[1:] != (32, 32, 3):
            raise FeatpipeError(f"{NAME}: Keras gave {split} images of shape {images.shape}, expected (n, 32, 32, 3)")
        labels = np.ravel(labels)
        splits[split] = ImageSplit(np.ascontiguousarray(images), labels, numbered_ids(NAME, len(labels)))
    return Dataset(NAME, list(CLASS_NAMES), splits, location="Keras download")
