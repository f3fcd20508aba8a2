"""What every source returns: labelled splits in memory, plus what it could not read."""

import dataclasses
from pathlib import Path

import numpy as np

from plumbing.errors import FeatpipeError
from storage.image_store import SPLITS, ImageSplit


@dataclasses.dataclass(frozen=True)
class SourceSettings:
    """Knobs a loader may use; the built-in sets ignore those about files on disk.

    image_size : side of the square images a folder source produces, in pixels
    test_fraction : share of each class a folder without train/ and test/ holds out
    max_bad_fraction : share of unreadable files a folder source tolerates
    seed : seed of every random choice (split, order)
    progress : show a progress bar while reading files
    workers : processes decoding image files at once; None means one per core
    """

    image_size: int = 64
    test_fraction: float = 0.2
    max_bad_fraction: float = 0.05
    seed: int = 0
    progress: bool = False
    workers: int = None


@dataclasses.dataclass
class Dataset:
    """A source read into memory.

    source : str
        Registry name of the source (``fashion_mnist``, ``cifar10``, ``folder``).
    class_names : list of str
        Name of each label; label ``i`` is ``class_names[i]``.
    splits : dict of str to ImageSplit
        ``train`` and ``test``, images of shape (n_samples, height, width, channels).
    skipped : list of (str, str)
        ``(id, reason)`` of each input that could not be read.
    location : str
        Where the images came from, for people reading the summary.
    """

    source: str
    class_names: list
    splits: dict
    skipped: list = dataclasses.field(default_factory=list)
    location: str = ""

    def class_counts(self, split):
        """ndarray of shape (n_classes,): how many images of each class ``split`` holds."""
        return np.bincount(self.splits[split].labels, minlength=len(self.class_names))


def split_from_rows(images, labels, ids, rows):
    """The :class:`ImageSplit` of ``rows`` (an index array) of parallel ``images``, ``labels``, ``ids``."""
    rows = np.asarray(rows, dtype=np.int64)
    return ImageSplit(images[rows], np.asarray(labels)[rows], [ids[i] for i in rows])


def existing_folder(source, path):
    """``path`` as a Path, after checking it is a folder."""
    path = Path(path)
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise FeatpipeError(f"{source}: data path {path} {state}")
    return path


def numbered_ids(source, count):
    """``<source>:<index>`` for rows 0..count-1 of a built-in set's own split file."""
    return [f"{source}:{index}" for index in range(count)]


__all__ = ["SPLITS", "Dataset", "SourceSettings", "existing_folder", "numbered_ids", "split_from_rows"]
