"""Feature files: self-contained HDF5 that analysts open directly.

Layout (the public contract in data/README.md, "features/<name>-<layer>.h5")::

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
import contextlib
import errno
import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np

from plumbing.atomic import exclusive_output, flush_to_disk, partial_path
from plumbing.errors import FeatpipeError, first_line
from storage.chunkio import ChunkWriter, CodecPool, copy_chunks, intact_rows, row_chunk_layout, rows_per_chunk
from storage.image_store import SPLITS, STRING, _plain

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

# What a file says about the extractor that made it: enough to build the same one again
# (features.engine.FeatureExtractor.from_settings), and what a model trained on it records.
EXTRACTOR_KEYS = (
    "backbone", "layer", "feature_dim", "input_size", "preprocessing", "resize_method", "weights", "weights_sha256",
    "precision", "seed",
)  # fmt: skip

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


def extractor_settings(attrs):
    """The :data:`EXTRACTOR_KEYS` among a feature file's attributes ``attrs``: how its rows were made."""
    return {key: attrs[key] for key in EXTRACTOR_KEYS if key in attrs}


def settings_mismatch(wanted, found, ignore=()):
    """The first of :data:`EXTRACTOR_KEYS` on which two extractor settings differ (``None``: they agree).

    Keys ``wanted`` lacks, and those in ``ignore``, are not compared; the
    weights' SHA-256 comes last, so a difference is named by its plainest cause.
    """
    for key in EXTRACTOR_KEYS:
        if key in wanted and key not in ignore and _canonical(wanted[key]) != _canonical(found.get(key)):
            return key
    return None


def _canonical(value):
    return json.dumps(_plain(value), sort_keys=True)


class FeatureWriter:
    """Write a feature file row block by row block, resumably, as the one writer of it.

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
    pool : CodecPool or None
        Compresses the chunks; default: a pool of this writer's own.

    After construction, ``already_complete`` says whether a finished file
    with the same identity exists (nothing to do), and ``rows_done(split)``
    how many rows of each split are on disk, verified by reading them back.

    From construction to :meth:`finish` or :meth:`close` the writer holds
    ``<path>.lock`` (:func:`plumbing.atomic.exclusive_output`): a second
    process writing the same file is refused. Every HDF5 write and flush is
    checked; one that fails (a full disk) ends in a one-line
    :class:`FeatpipeError` and leaves the ``.partial`` for the resume, never
    a file under the final name.
    """

    def __init__(self, path, *, attrs, splits, overwrite=False, pool=None):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.attrs = dict(attrs)
        self.splits = splits
        self.already_complete = False
        self._file = None
        self._writers = {}
        self._owned_pool = CodecPool() if pool is None else None
        self._pool = pool or self._owned_pool
        self._held = contextlib.ExitStack()
        try:
            self._held.enter_context(exclusive_output(self.path))
            if self.path.exists() and self._finished_file_matches(overwrite):
                self.already_complete = True
                self.close()
                return
            self._open_partial()
        except BaseException:
            self.close()
            raise

    def _finished_file_matches(self, overwrite):
        found = read_metadata(self.path)
        differs = identity_mismatch(self.attrs, found)
        if differs is None and found.get("complete"):
            return True
        if differs is None:
            # Only a featpipe older than its write locks could leave one; it holds no numbers to keep.
            log.warning("%s is unfinished (complete=False); extracting it again", self.path)
            self.path.unlink()
            return False
        if not overwrite:
            raise FeatpipeError(
                f"{self.path} exists with {differs}={found.get(differs)!r}, but this run asks for "
                f"{self.attrs.get(differs)!r}; pass --overwrite to replace it"
            )
        log.info("replacing %s (%s differs)", self.path, differs)
        return False

    def _open_partial(self):
        if self.partial.exists() and self._resume():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = h5py.File(self.partial, "w")
            self._create_layout()
        except (OSError, RuntimeError) as error:
            raise self._write_error(error, "cannot write") from None
        self._start_writers()

    def _resume(self):
        """Continue the ``.partial`` of an interrupted run if it has the same identity; whether it did.

        The rows that read back are copied, chunk by chunk as stored, into a
        fresh file that replaces the old one: a write that failed half-way (a
        full disk) can leave HDF5's own bookkeeping of the old file unfit for
        more writes, though every verified chunk in it is good.
        """
        fresh = self.partial.with_name(self.partial.name + ".resume")
        try:
            with h5py.File(self.partial, "r") as old:
                if identity_mismatch(self.attrs, old.attrs) is not None:
                    log.info("discarding %s: it was started with other settings", self.partial)
                    self.partial.unlink()
                    return False
                self._file = h5py.File(fresh, "w")
                self._create_layout()
                for name in self.splits:
                    self._carry_over(old[name], name)
            self._file.flush()
            os.replace(fresh, self.partial)  # the open file keeps its descriptor under the new name
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error):
                self._discard_file(fresh)
                raise self._write_error(error) from None
            # We hold the lock, so no other process is writing it: a kill or a full disk left it.
            log.warning("%s is unreadable (%s); starting it again", self.partial, first_line(error))
            self._discard_file(fresh)
            self.partial.unlink(missing_ok=True)
            return False
        self._start_writers()
        log.info("resuming %s", self.partial)
        return True

    def _carry_over(self, old_group, name):
        """The rows of ``old_group`` that read back, into this file's group ``name``."""
        features = old_group["features"]
        done = intact_rows(features, int(old_group.attrs["rows_written"]), self._pool)
        if done < len(features):
            done -= done % rows_per_chunk(features)  # a resume starts on a chunk boundary
        if done < int(old_group.attrs["rows_written"]):
            log.info("%s %s: %d of the %d rows claimed read back; recomputing the rest",
                     self.partial, name, done, int(old_group.attrs["rows_written"]))
        if done:
            copy_chunks(features, self._file[name]["features"], done)
        self._file[name].attrs["rows_written"] = done

    def _discard_file(self, path):
        self._close_file()
        path.unlink(missing_ok=True)

    def _create_layout(self):
        dim = int(self.attrs["feature_dim"])
        # At most a MiB, and a power of two: Dask shards and batches of 2^k rows then fill whole chunks.
        rows_per_chunk = 1 << max(0, (CHUNK_BYTES // (4 * dim)).bit_length() - 1)
        for name, (labels, ids) in self.splits.items():
            group = self._file.create_group(name)
            n = len(labels)
            # gzip level 1: nearly the size of level 4 on features, and twice as fast to
            # write. No shuffle filter: on ReLU features it makes the chunks bigger and
            # slower to decode (storage/chunkio.py's measurements, README).
            storage = {"chunks": (min(rows_per_chunk, n), dim), "compression": "gzip", "compression_opts": 1}
            group.create_dataset("features", shape=(n, dim), dtype="float32", **(storage if n else {}))
            group.create_dataset("labels", data=np.asarray(labels, dtype=np.int64))
            group.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=STRING)
            group.attrs["rows_written"] = 0
        for key, value in self.attrs.items():
            self._file.attrs[key] = storable_attribute(value)
        self._file.attrs["complete"] = False
        self._file.flush()

    def _start_writers(self):
        """A chunk writer per split, from the rows on disk."""
        for name in self.splits:
            group = self._file[name]
            self._writers[name] = ChunkWriter(group["features"], self._pool, start=int(group.attrs["rows_written"]))

    def layout(self, split):
        """The :class:`~storage.chunkio.RowChunkLayout` of ``split``'s features: how a worker encodes chunks for it."""
        return row_chunk_layout(self._file[split]["features"])

    def append_encoded(self, split, chunks):
        """Write chunks compressed elsewhere (:meth:`layout`'s ``encode``) after the rows on disk."""
        writer = self._writers[split]
        try:
            self._record(split, writer.write_encoded(chunks))
        except (OSError, RuntimeError) as error:
            raise self._write_error(error) from None

    def rows_done(self, split):
        if self.already_complete:
            return len(self.splits[split][0])
        return int(self._file[split].attrs["rows_written"])

    def append(self, split, rows):
        """Write ``rows`` (ndarray of shape (n, feature_dim)) after the rows already taken.

        Rows of a chunk that isn't full yet wait in memory until it is (or
        until the split's last row): ``rows_done`` counts only rows on disk.
        """
        writer = self._writers[split]
        try:
            writer.write(np.ascontiguousarray(rows, dtype=np.float32))
            self._record(split, writer.rows_written)
        except (OSError, RuntimeError) as error:
            raise self._write_error(error) from None

    def _record(self, split, rows_written):
        """Flush the rows handed to HDF5, then say so: ``rows_written`` never runs ahead of the disk."""
        group = self._file[split]
        if rows_written != int(group.attrs["rows_written"]):
            self._file.flush()
            group.attrs["rows_written"] = rows_written
            self._file.flush()

    def _write_error(self, error, doing="error writing"):
        """The one line a failed HDF5 write or flush becomes (h5py raises OSError, or RuntimeError on flush)."""
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left" in str(error):
            return FeatpipeError(f"no space left on device writing {self.partial}; free space and rerun to resume")
        return FeatpipeError(f"{doing} {self.partial}: {first_line(error)}; rerun to resume")

    def finish(self):
        """Mark the file complete, close it and move it to its final name; nothing moves if a write fails."""
        try:
            for name, writer in self._writers.items():
                self._record(name, writer.flush())
        except (OSError, RuntimeError) as error:
            raise self._write_error(error) from None
        for name in self.splits:
            done, total = self.rows_done(name), len(self.splits[name][0])
            if done != total:
                raise RuntimeError(f"{name}: {done} of {total} rows written; cannot finish")
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
        try:
            self._file.attrs["complete"] = True
            self._file.flush()
            self._file.close()
            self._file = None
            flush_to_disk(self.partial)
        except (OSError, RuntimeError) as error:
            raise self._write_error(error) from None
        os.replace(self.partial, self.path)
        self.close()

    def close(self):
        """Close without finishing: the ``.partial`` file stays for the next run, and the lock goes.

        Whole chunks still being compressed are written first (rows computed
        are worth keeping for the resume); the rows of an unfinished chunk are
        dropped, as ``rows_done`` never counted them.
        """
        for name, writer in self._writers.items():
            with contextlib.suppress(OSError, RuntimeError):  # after a failed write, keep what is on disk
                if self._file is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        writer.flush()
                    self._record(name, writer.rows_written)  # the chunks HDF5 took before any failure
            writer.close()
        self._writers = {}
        self._close_file()
        if self._owned_pool is not None:
            self._owned_pool.close()
        self._held.close()

    def _close_file(self):
        # Closed here, in the owning thread, not by the garbage collector at exit: after
        # a failed write HDF5 may not close a file cleanly, and at interpreter shutdown
        # that crashed the process (storage/chunkio.py says why).
        if self._file is not None:
            try:
                self._file.close()
            except (OSError, RuntimeError) as error:
                log.info("closing %s: %s", self.partial, first_line(error))
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def storable_attribute(value):
    """``value`` as an HDF5 attribute can hold it: a dict as JSON text, ``None`` as ``"none"``."""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if value is None:
        return "none"
    return value
