"""Feature files: self-contained HDF5 that analysts open directly.

Layout (the public contract in DESIGN.md)::

    /train/features  float32 [N, D]   chunked by rows, gzip-compressed
    /train/labels    int64 [N]        copied from the image store
    /train/ids       UTF-8 [N]        copied from the image store
    /test/...        the same
    root attributes: backbone, layer, feature_dim, input_size, preprocessing,
                     weights, weights_sha256, precision, versions,
                     image_store_fingerprint, class_names, splits, complete, ...

A file is written as ``<name>.partial`` and renamed when every row is in.
Each group's ``rows_written`` attribute is raised only after its rows are
flushed, so a run killed at any point resumes from rows known to be on disk.
"""

import collections
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from features.atomic import partial_path
from features.errors import FeatpipeError
from features.image_store import SPLITS, STRING, _plain

log = logging.getLogger(__name__)

# The attributes that say what a file holds: a file that differs in any of
# them holds other numbers, so it is neither resumed nor reused.
# The SHA-256 comes last so that a mismatch is reported by its plainest cause
# (a random-weights hash also changes with the precision).
IDENTITY_KEYS = (
    "backbone",
    "layer",
    "feature_dim",
    "input_size",
    "preprocessing",
    "resize_method",
    "weights",
    "precision",
    "image_store_fingerprint",
    "class_names",
    "splits",
    "weights_sha256",
)

CHUNK_BYTES = 1 << 20

Features = collections.namedtuple("Features", "features labels ids class_names metadata")


def read_metadata(path):
    """The root attributes of a feature file as plain Python values."""
    path = Path(path)
    try:
        with h5py.File(path, "r") as file:
            return {key: _plain(value) for key, value in file.attrs.items()}
    except FileNotFoundError:
        raise FeatpipeError(f"feature file not found: {path} (run `featpipe extract` first)") from None
    except OSError:
        raise FeatpipeError(f"feature file {path} is not a readable HDF5 file; rerun `featpipe extract`") from None


def complete_metadata(path):
    """:func:`read_metadata` of a finished feature file; an unfinished one is refused."""
    metadata = read_metadata(path)
    if not metadata.get("complete"):
        raise FeatpipeError(f"feature file {path} is incomplete; rerun `featpipe extract` to finish it")
    return metadata


def load_features(path, split="train", lazy=False):
    """Load one split of a feature file.

    Parameters
    ----------
    path : path-like
        A file written by ``featpipe extract``.
    split : {"train", "test"}
    lazy : bool
        Return the features as a dask array read on demand (the file stays
        open while the array lives) instead of a NumPy array.

    Returns
    -------
    Features
        A named tuple: ``features`` (ndarray or dask array of shape
        (n_samples, feature_dim), float32), ``labels`` (ndarray of shape
        (n_samples,)), ``ids`` (list of str), ``class_names`` (list of str)
        and ``metadata`` (dict of the file's attributes).
    """
    if split not in SPLITS:
        raise FeatpipeError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    metadata = complete_metadata(path)
    file = h5py.File(path, "r")
    group = file[split]
    labels = group["labels"][:]
    ids = [v.decode() if isinstance(v, bytes) else str(v) for v in group["ids"][:]]
    if lazy:
        import dask.array as da

        features = da.from_array(group["features"], chunks=(group["features"].chunks or group["features"].shape))
    else:
        features = group["features"][:]
        file.close()
    return Features(features, labels, ids, list(metadata["class_names"]), metadata)


def identity(attrs):
    """The part of ``attrs`` that decides which numbers a file holds."""
    return {key: _plain(attrs[key]) for key in IDENTITY_KEYS if key in attrs}


def identity_mismatch(wanted, found):
    """The first identity key on which two attribute sets differ, or ``None``."""
    wanted, found = identity(wanted), identity(found)
    for key in IDENTITY_KEYS:
        if key in wanted and _canonical(wanted[key]) != _canonical(found.get(key)):
            return key
    return None


def _canonical(value):
    return json.dumps(_plain(value), sort_keys=True)


class FeatureWriter:
    """Write a feature file row block by row block, resumably.

    Parameters
    ----------
    path : path-like
        The final name, e.g. ``data/features/vgg16-fc2.h5``.
    attrs : dict
        Root attributes (see the module docstring); ``feature_dim`` is required.
    splits : dict
        ``{split: (labels, ids)}`` as in the image store.
    overwrite : bool
        Replace a finished file made with other settings instead of refusing.

    After construction, ``already_complete`` says whether a finished file
    with the same identity exists (nothing to do), and ``rows_done(split)``
    how many rows of each split are already on disk.
    """

    def __init__(self, path, *, attrs, splits, overwrite=False):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.attrs = dict(attrs)
        self.splits = splits
        self.already_complete = False
        self._file = None
        if self.path.exists() and self._finished_file_matches(overwrite):
            self.already_complete = True
            return
        self._open_partial()

    def _finished_file_matches(self, overwrite):
        found = read_metadata(self.path)
        differs = identity_mismatch(self.attrs, found)
        if differs is None and found.get("complete"):
            return True
        if not overwrite:
            raise FeatpipeError(
                f"{self.path} exists with {differs}={found.get(differs)!r}, but this run asks for "
                f"{self.attrs.get(differs)!r}; pass --overwrite to replace it"
            )
        log.info("replacing %s (%s differs)", self.path, differs)
        return False

    def _open_partial(self):
        if self.partial.exists():
            try:
                file = h5py.File(self.partial, "a")
            except OSError:
                log.warning("%s is unreadable (killed mid-write?); starting it again", self.partial)
                self.partial.unlink()
            else:
                if identity_mismatch(self.attrs, file.attrs) is None:
                    self._file = file
                    log.info("resuming %s", self.partial)
                    return
                file.close()
                log.info("discarding %s: it was started with other settings", self.partial)
                self.partial.unlink()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = h5py.File(self.partial, "w")
        except OSError as error:
            raise FeatpipeError(f"cannot write {self.partial}: {error.strerror or error}") from None
        self._create_layout()

    def _create_layout(self):
        dim = int(self.attrs["feature_dim"])
        rows_per_chunk = max(1, CHUNK_BYTES // (4 * dim))
        for name, (labels, ids) in self.splits.items():
            group = self._file.create_group(name)
            n = len(labels)
            # gzip level 1: nearly the size of level 4 on features, and twice as fast
            # to write, which matters when a GPU produces thousands of rows a second.
            storage = {"chunks": (min(rows_per_chunk, n), dim), "compression": "gzip", "compression_opts": 1}
            group.create_dataset("features", shape=(n, dim), dtype="float32", **(storage if n else {}))
            group.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
            group.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=STRING)
            group.attrs["rows_written"] = 0
        for key, value in self.attrs.items():
            self._file.attrs[key] = _storable(value)
        self._file.attrs["complete"] = False
        self._file.flush()

    def rows_done(self, split):
        if self.already_complete:
            return len(self.splits[split][0])
        return int(self._file[split].attrs["rows_written"])

    def rows_per_chunk(self, split):
        """Rows in one HDF5 chunk of ``split``'s features: appends of whole chunks are fastest."""
        chunks = self._file[split]["features"].chunks
        return chunks[0] if chunks else 1

    def append(self, split, rows):
        """Write ``rows`` (ndarray of shape (n, feature_dim)) after the rows already done."""
        group = self._file[split]
        start = int(group.attrs["rows_written"])
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        group["features"][start : start + len(rows)] = rows
        self._file.flush()
        group.attrs["rows_written"] = start + len(rows)
        self._file.flush()

    def finish(self):
        """Mark the file complete and move it to its final name."""
        for name in self.splits:
            done, total = self.rows_done(name), len(self.splits[name][0])
            if done != total:
                raise RuntimeError(f"{name}: {done} of {total} rows written; cannot finish")
        self._file.attrs["complete"] = True
        self._file.close()
        self._file = None
        os.replace(self.partial, self.path)

    def close(self):
        """Close without finishing: the ``.partial`` file stays for the next run."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _storable(value):
    """Attribute values HDF5 can hold: dicts go in as JSON text."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "none"
    return value
