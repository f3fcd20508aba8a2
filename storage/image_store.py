"""The canonical image store, ``images.h5``: every source ends up in this one layout.

Layout (the contract in data/README.md, "prepared/images.h5")::

    /train/images  uint8 [N, H, W, C]   C is 1 or 3; chunked by rows
    /train/labels  int64 [N]
    /train/ids     UTF-8 strings [N]    relative file path, or "<source>:<index>"
    /test/...      the same
    /skipped       table of (id, reason) for inputs that could not be read
    root attributes: source, class_names, seed, train_size, test_size,
                     num_skipped, fingerprint (SHA-256 of the contents)
"""

import contextlib
import dataclasses
import errno
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from plumbing.atomic import atomic_output, exclusive_output
from plumbing.errors import FeatpipeError, first_line
from storage.chunkio import CodecPool, iter_row_blocks, write_array

SPLITS = ("train", "test")
STRING = h5py.string_dtype("utf-8")
# Chunks of about 4 MiB, at most 256 rows: a 224x224x3 photo store decodes in many
# chunks at once on many cores, and reading one batch touches little else.
CHUNK_BYTES = 4 << 20
MAX_ROWS_PER_CHUNK = 256


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


def write_image_store(path, splits, *, source, class_names, seed, train_size=None, test_size=None, skipped=(), threads=None):
    """Write ``splits`` (a dict of :class:`ImageSplit` by split name) to ``path`` atomically.

    ``skipped`` is a sequence of ``(id, reason)`` pairs for inputs that could
    not be read. The images are compressed by ``threads`` threads
    (:class:`~storage.chunkio.CodecPool`; None: one per core). Only one
    process writes ``path`` at a time; a write that fails (a full disk) ends
    in a one-line :class:`FeatpipeError` and leaves nothing behind. Returns
    the store's fingerprint.
    """
    missing = [name for name in SPLITS if name not in splits]
    if missing:
        raise ValueError(f"splits {missing} missing; expected {SPLITS}")
    fingerprint = content_fingerprint(splits, class_names)
    attrs = dict(
        source=source,
        class_names=list(class_names),
        seed=seed,
        train_size=-1 if train_size is None else train_size,
        test_size=-1 if test_size is None else test_size,
        num_skipped=len(list(skipped)),
        fingerprint=fingerprint,
    )
    with exclusive_output(path), atomic_output(path) as aside, CodecPool(threads) as pool:
        try:
            _write_store(aside, splits, list(skipped), attrs, pool)
        except (OSError, RuntimeError) as error:
            if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error):
                raise FeatpipeError(f"no space left on device writing {aside}; free space and rerun") from None
            raise FeatpipeError(f"cannot write {aside}: {first_line(error)}") from None
    return fingerprint


def _write_store(aside, splits, skipped, attrs, pool):
    store = h5py.File(aside, "w")
    try:
        for name in SPLITS:
            _write_split(store.create_group(name), splits[name], pool)
        table = store.create_dataset("skipped", shape=(len(skipped), 2), dtype=STRING)
        if skipped:
            table[...] = np.array(skipped, dtype=object)
        store.attrs.update(attrs)
        store.flush()
    finally:
        # Closed here, not by the garbage collector: after a failed write HDF5 can crash at exit.
        try:
            store.close()
        except (OSError, RuntimeError):
            pass


def rows_per_chunk(image_shape):
    """Rows in one chunk of images of ``image_shape`` (height, width, channels)."""
    return int(max(1, min(MAX_ROWS_PER_CHUNK, CHUNK_BYTES // max(1, int(np.prod(image_shape))))))


def _write_split(group, split, pool):
    n = len(split.images)
    # Row chunks let extract read a batch without touching the rest; gzip at
    # level 1 is what any HDF5 reader understands and costs little to decode.
    storage = {"chunks": (min(rows_per_chunk(split.images.shape[1:]), n),) + split.images.shape[1:],
               "compression": "gzip", "compression_opts": 1}
    images = group.create_dataset("images", shape=split.images.shape, dtype=np.uint8, **(storage if n else {}))
    if n:
        write_array(images, np.ascontiguousarray(split.images), pool)
    group.create_dataset("labels", data=split.labels)
    group.create_dataset("ids", data=np.array(split.ids, dtype=object), dtype=STRING)


def check_images(images, what="images"):
    """``images`` as an ndarray, refused in one line unless uint8 of shape (n, height, width, 1 or 3).

    The shape and type every split of an image store holds, and so what
    every model featpipe trains takes (training, explanations, predictions).

    Parameters
    ----------
    images : array-like of shape (n_samples, height, width, channels), uint8
    what : str, names the images in the message (e.g. ``training images``)

    Returns
    -------
    ndarray of shape (n_samples, height, width, channels), uint8
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise FeatpipeError(f"{what}: expected uint8 [N, H, W, 1|3] as stored, got {images.dtype} {images.shape}")
    return images


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
        with self._read_errors(split):
            return self._file[split]["images"][start:stop]

    def iter_images(self, split, start=0, stop=None, pool=None):
        """Yield ``(row, images)`` blocks of rows ``start:stop`` of ``split``, in order, a chunk each.

        The chunks are decompressed by ``pool`` (a
        :class:`~storage.chunkio.CodecPool`) off h5py's lock; the iterating
        thread does the HDF5 reads. ``images`` is uint8 of shape (n, height, width, channels).
        """
        with self._read_errors(split):
            yield from iter_row_blocks(self._file[split]["images"], pool or CodecPool(1), start, stop)

    @contextlib.contextmanager
    def _read_errors(self, split):
        """A damaged chunk (a bad disk, a bad copy) is one line that names the file."""
        try:
            yield
        except OSError as error:
            raise FeatpipeError(
                f"image store {self.path}: {split}/images can't be read ({first_line(error)}); rerun `featpipe prepare`"
            ) from None

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
