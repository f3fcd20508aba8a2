"""The canonical image store, ``images.h5``: every source ends up in this one layout.

Layout (the contract in DESIGN.md)::

    /train/images  uint8 [N, H, W, C]   C is 1 or 3; chunked by rows
    /train/labels  int64 [N]
    /train/ids     UTF-8 strings [N]    relative file path, or "<source>:<index>"
    /test/...      the same
    /skipped       table of (id, reason) for inputs that could not be read
    root attributes: source, class_names, seed, train_size, test_size,
                     num_skipped, fingerprint (SHA-256 of the contents)
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from features.atomic import atomic_output
from features.errors import FeatpipeError

SPLITS = ("train", "test")
STRING = h5py.string_dtype("utf-8")
ROWS_PER_CHUNK = 256


@dataclasses.dataclass
class ImageSplit:
    """One split in memory.

    images : ndarray of shape (n_samples, height, width, channels), uint8
    labels : ndarray of shape (n_samples,), integer class indices
    ids : list of str, one per sample
    """

    images: np.ndarray
    labels: np.ndarray
    ids: list

    def __post_init__(self):
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(f"images must be uint8 [N, H, W, 1|3], got {self.images.dtype} {self.images.shape}")
        if not len(self.images) == len(self.labels) == len(self.ids):
            raise ValueError(
                f"images, labels and ids differ in length: {len(self.images)}, {len(self.labels)}, {len(self.ids)}"
            )


def content_fingerprint(splits, class_names):
    """SHA-256 over images, labels, ids and class names: equal stores, equal fingerprints."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(class_names)).encode())
    for name in SPLITS:
        split = splits[name]
        digest.update(name.encode())
        digest.update(str(split.images.shape).encode())
        digest.update(np.ascontiguousarray(split.images).tobytes())
        digest.update(split.labels.astype("<i8").tobytes())
        digest.update("\n".join(split.ids).encode())
    return digest.hexdigest()


def write_image_store(path, splits, *, source, class_names, seed, train_size=None, test_size=None, skipped=()):
    """Write ``splits`` (a dict of :class:`ImageSplit` by split name) to ``path`` atomically.

    ``skipped`` is a sequence of ``(id, reason)`` pairs for inputs that could
    not be read. Returns the store's fingerprint.
    """
    missing = [name for name in SPLITS if name not in splits]
    if missing:
        raise ValueError(f"splits {missing} missing; expected {SPLITS}")
    fingerprint = content_fingerprint(splits, class_names)
    with atomic_output(path) as aside:
        with h5py.File(aside, "w") as store:
            for name in SPLITS:
                _write_split(store.create_group(name), splits[name])
            skipped = list(skipped)
            table = store.create_dataset("skipped", shape=(len(skipped), 2), dtype=STRING)
            if skipped:
                table[...] = np.array(skipped, dtype=object)
            store.attrs.update(
                source=source,
                class_names=list(class_names),
                seed=seed,
                train_size=-1 if train_size is None else train_size,
                test_size=-1 if test_size is None else test_size,
                num_skipped=len(skipped),
                fingerprint=fingerprint,
            )
    return fingerprint


def _write_split(group, split):
    n = len(split.images)
    # Row chunks let extract read a batch without touching the rest; gzip at
    # level 1 is what any HDF5 reader understands and costs little to decode.
    storage = {"chunks": (min(ROWS_PER_CHUNK, n),) + split.images.shape[1:], "compression": "gzip", "compression_opts": 1}
    group.create_dataset("images", data=split.images, **(storage if n else {}))
    group.create_dataset("labels", data=split.labels)
    group.create_dataset("ids", data=np.array(split.ids, dtype=object), dtype=STRING)


class ImageStore:
    """Read access to ``images.h5`` without loading it: rows come in slices.

    Use as a context manager::

        with ImageStore("data/prepared/images.h5") as store:
            batch = store.images("train", 0, 64)
    """

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise FeatpipeError(f"image store not found: {self.path} (run `featpipe prepare` first)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError:
            raise FeatpipeError(f"image store {self.path} is not a readable HDF5 file; rerun `featpipe prepare`") from None
        self._check_layout()

    def _check_layout(self):
        for name in SPLITS:
            if name not in self._file or not {"images", "labels", "ids"} <= set(self._file[name]):
                self.close()
                raise FeatpipeError(f"image store {self.path} lacks {name}/images, labels or ids; rerun `featpipe prepare`")
            images = self._file[name]["images"]
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
                # Read the shape before closing: a closed file's datasets can't say it.
                found = f"{images.dtype} {images.shape}"
                self.close()
                raise FeatpipeError(f"image store {self.path}: {name}/images must be uint8 [N, H, W, 1|3], got {found}")
        if "fingerprint" not in self._file.attrs:
            self.close()
            raise FeatpipeError(f"image store {self.path} is incomplete (no fingerprint); rerun `featpipe prepare`")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._file.close()

    @property
    def class_names(self):
        return [str(name) for name in self._file.attrs["class_names"]]

    @property
    def fingerprint(self):
        return str(self._file.attrs["fingerprint"])

    @property
    def attrs(self):
        return {key: _plain(value) for key, value in self._file.attrs.items()}

    def num_rows(self, split):
        return self._file[split]["images"].shape[0]

    def image_shape(self, split="train"):
        """``(height, width, channels)`` of every image in the store."""
        return tuple(self._file[split]["images"].shape[1:])

    def images(self, split, start=0, stop=None):
        """uint8 images of rows ``start:stop`` of ``split``."""
        return self._file[split]["images"][start:stop]

    def labels(self, split):
        return self._file[split]["labels"][:]

    def ids(self, split):
        return [value.decode() if isinstance(value, bytes) else str(value) for value in self._file[split]["ids"][:]]

    def skipped(self):
        """``(id, reason)`` pairs of inputs that prepare could not read."""
        table = self._file["skipped"][:] if "skipped" in self._file else []
        return [tuple(v.decode() if isinstance(v, bytes) else str(v) for v in row) for row in table]


def _plain(value):
    """HDF5 attributes as plain Python values (lists, str, int, float)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
