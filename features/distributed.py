"""Feature extraction spread over Dask distributed workers.

The image store is cut into shards of ``shard_size`` rows, one Dask task
each. A worker builds the backbone once and keeps it for every shard it gets;
each shard's features go, already compressed into the feature file's
chunks, to their own part file, written aside and renamed, in a folder
beside the output::

    data/features/vgg16-fc2.h5.parts/identity.json
    data/features/vgg16-fc2.h5.parts/train-0000000000-0000001024-<identity digest>.chunks.npz
    ...

A part is named by its row range and appears whole or not at all, so a task
that Dask recomputes after its worker died cannot lose or double a row.
Shards start and end on chunk boundaries, and the workers do the codec work
(on every core they have), so the client only moves bytes: it writes
finished parts' chunks into the feature file in row order as they arrive
(so the join overlaps the extraction), then renames the file into place and
removes the folder. A rerun after the client itself was killed
reuses every part on disk and every row already appended, provided the
folder's ``identity.json`` matches this run's settings.

Workers need the image store and the output folder at the same paths as the
client (a shared filesystem) and the same featpipe version.
"""

import collections
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from plumbing.atomic import write_bytes_atomically
from plumbing.cluster import dask_client, dashboard_link
from plumbing.errors import FeatpipeError, worker_result
from storage.chunkio import CodecPool
from storage.feature_store import FeatureWriter, identity, identity_mismatch
from storage.image_store import SPLITS, ImageStore

log = logging.getLogger(__name__)

Shard = collections.namedtuple("Shard", "split start stop")

IDENTITY_FILE = "identity.json"
TASK_RETRIES = 1


def extract_distributed(
    image_store_path, out_path, extractor, *, scheduler=None, workers=None, shard_size=1024, overwrite=False, progress=True
):
    """Extract features of every image in the store on a Dask cluster into one feature file.

    Parameters
    ----------
    image_store_path : path-like
        ``images.h5``; every worker must see it at this path.
    out_path : path-like
        The feature file to write; its folder must be shared with the workers.
    extractor : FeatureExtractor
        Unfitted is fine (and cheaper to ship): each worker fits its own copy once.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    workers : int, optional
        Without ``scheduler``: start a local cluster of this many processes.
    shard_size : int
        Rows per Dask task, rounded up to whole chunks of the feature file
        (and whole batches where that costs little): :func:`shard_size_for`.
    overwrite : bool
        Replace an existing feature file made with other settings.
    progress : bool
        Show one progress bar over all shards, and the dashboard link.

    Returns
    -------
    dict
        The summary :func:`features.engine.extract_features` returns, plus
        ``shards``, ``shards_reused``, ``workers`` and ``setup_seconds``
        (cluster start and model builds, not in ``seconds``).
    """
    if not isinstance(shard_size, int) or shard_size < 1:
        raise FeatpipeError(f"shard_size: expected an integer >= 1, got {shard_size!r}")
    image_store_path, out_path = Path(image_store_path).absolute(), Path(out_path).absolute()
    started = time.perf_counter()
    with ImageStore(image_store_path) as store:
        fingerprint = store.fingerprint
        splits = {name: (store.labels(name), store.ids(name)) for name in SPLITS}
    with dask_client(scheduler, workers) as client:
        if progress:
            _announce(client)
        attrs = worker_attributes(client, extractor, image_store_path, fingerprint)
        setup_seconds = time.perf_counter() - started
        with FeatureWriter(out_path, attrs=attrs, splits=splits, overwrite=overwrite) as writer:
            if writer.already_complete:
                shutil.rmtree(parts_folder(out_path), ignore_errors=True)
                return _summary(attrs, out_path, splits, Progress(0, 0, 0, 0.0), setup_seconds, client, skipped=True)
            batch_size = extractor.get_params().get("batch_size") or 1
            shard_rows = {name: shard_size_for(shard_size, batch_size, writer.layout(name).rows_per_chunk) for name in splits}
            done = _extract_shards(client, writer, extractor, image_store_path, splits, shard_rows, progress)
            writer.finish()
        shutil.rmtree(parts_folder(out_path), ignore_errors=True)
        return _summary(attrs, out_path, splits, done, setup_seconds, client)


def shard_size_for(shard_size, batch_size, rows_per_chunk):
    """``shard_size`` rounded up so that shards start and end on chunk boundaries, in whole batches if it can.

    A worker hands whole compressed chunks to the client, so a shard must not
    split one; a shard's short last batch is padded, so computed twice over.
    """
    step = math.lcm(batch_size, rows_per_chunk)
    step = step if step <= 4 * shard_size else rows_per_chunk
    rounded = -(-shard_size // step) * step
    if rounded != shard_size:
        log.info("shard_size %d rounded up to %d (chunks of %d rows, batches of %d)", shard_size, rounded, rows_per_chunk, batch_size)
    return rounded


Progress = collections.namedtuple("Progress", "shards reused rows_computed seconds")


def _extract_shards(client, writer, extractor, image_store_path, splits, shard_rows, progress):
    """Bring every row the writer lacks from the workers (or from parts on disk) into it."""
    started = time.perf_counter()
    layouts = {name: writer.layout(name) for name in splits}
    parts = PartFolder(parts_folder(writer.path), writer.attrs, layouts)
    every_shard = plan_shards({name: len(labels) for name, (labels, _) in splits.items()}, shard_rows)
    shards = [shard for shard in every_shard if shard.stop > writer.rows_done(shard.split)]
    join = ShardJoin(writer, shards, parts)
    todo = [shard for shard in shards if not join.offer_existing(shard)]
    rows = sum(shard.stop - max(shard.start, writer.rows_done(shard.split)) for shard in todo)
    if todo:
        _run_shards(client, extractor, image_store_path, todo, parts, join, layouts, total=len(every_shard), progress=progress)
    return Progress(len(every_shard), len(every_shard) - len(todo), rows, time.perf_counter() - started)


def parts_folder(out_path):
    """``<out>.parts``: where the shards of ``out_path`` wait to be joined."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".parts")


def plan_shards(num_rows, shard_rows):
    """Shards of ``shard_rows[split]`` rows over every split, in row order.

    Boundaries are multiples of the shard size whatever was done before, so
    a rerun names its parts as the first run did.
    """
    return [
        Shard(split, start, min(start + shard_rows[split], total))
        for split, total in num_rows.items()
        for start in range(0, total, shard_rows[split])
    ]


class PartFolder:
    """The folder of part files, valid only for one set of identity attributes.

    A folder left by a run with other settings (another backbone, weights,
    image store...) holds other numbers: it is emptied, never reused.
    """

    def __init__(self, path, attrs, layouts):
        self.path = Path(path)
        self.layouts = layouts
        wanted = identity(attrs)
        text = json.dumps(wanted, sort_keys=True)
        # In every part's name: a task still running for an earlier run with
        # other settings can never leave a part this run would take.
        self.digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        found = self._recorded_identity()
        if found is None or identity_mismatch(wanted, found) is not None:
            if self.path.exists():
                log.info("discarding %s: its parts were made with other settings", self.path)
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)
            write_bytes_atomically(self.path / IDENTITY_FILE, text.encode())

    def _recorded_identity(self):
        try:
            return json.loads((self.path / IDENTITY_FILE).read_text())
        except (OSError, ValueError):
            return None

    def part(self, shard):
        return self.path / f"{shard.split}-{shard.start:010d}-{shard.stop:010d}-{self.digest}.chunks.npz"

    def load(self, shard):
        """The shard's compressed chunks (a list of bytes), or ``None`` when its part is missing or malformed."""
        try:
            with np.load(self.part(shard)) as part:
                sizes, data = part["sizes"], part["data"]
        except (OSError, ValueError, KeyError):
            return None
        per_chunk = self.layouts[shard.split].rows_per_chunk
        expected = -(-(shard.stop - shard.start) // per_chunk)
        if len(sizes) != expected or int(sizes.sum()) != len(data):
            log.warning("ignoring %s: %d chunks of %d bytes, expected %d chunks", self.part(shard), len(sizes), len(data), expected)
            return None
        ends = np.cumsum(sizes)
        return [data[end - size : end].tobytes() for size, end in zip(sizes, ends)]

    def remove(self):
        shutil.rmtree(self.path, ignore_errors=True)


class ShardJoin:
    """Append parts to the feature file in row order, as soon as each one's turn comes."""

    def __init__(self, writer, shards, parts):
        self.writer = writer
        self.parts = parts
        self.queue = collections.deque(shards)
        self.ready = set()

    def offer_existing(self, shard):
        """Take the shard's part from an earlier run if it is on disk; say whether it was."""
        if self.parts.load(shard) is None:
            return False
        self.finished(shard)
        return True

    def finished(self, shard):
        self.ready.add(shard)
        while self.queue and self.queue[0] in self.ready:
            self._append(self.queue.popleft())

    def _append(self, shard):
        chunks = self.parts.load(shard)
        if chunks is None:
            raise FeatpipeError(f"part {self.parts.part(shard)} vanished or is damaged; rerun to recompute it")
        # Rows an earlier run appended already: whole chunks, since shards and resumes keep to chunk boundaries.
        skip = max(0, self.writer.rows_done(shard.split) - shard.start)
        self.writer.append_encoded(shard.split, chunks[skip // self.parts.layouts[shard.split].rows_per_chunk :])
        self.ready.discard(shard)
        self.parts.part(shard).unlink(missing_ok=True)


def _run_shards(client, extractor, image_store_path, shards, parts, join, layouts, *, total, progress):
    """One Dask task per shard; each finished part joins the file as soon as its turn comes."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    pending = {
        client.submit(
            extract_shard, extractor, str(image_store_path), shard, str(parts.part(shard)), layouts[shard.split],
            key=f"featpipe-shard-{shard.split}-{shard.start}-{uuid.uuid4().hex[:8]}", retries=TASK_RETRIES,
            # Earlier rows first, so the join keeps pace and few parts wait on disk.
            priority=len(shards) - index,
        ): shard
        for index, shard in enumerate(shards)
    }
    try:
        with tqdm(total=total, initial=total - len(shards), unit="shard", desc="shards", disable=not progress, file=sys.stderr) as bar:
            for future in as_completed(list(pending), loop=client.loop):
                # Dropping a finished future lets its worker forget it: if that
                # worker dies later, Dask has no result to recompute.
                shard = pending.pop(future)
                _raise_for_shard(future, shard)
                join.finished(shard)
                bar.update()
    finally:
        client.cancel(list(pending))


def _announce(client):
    """Say where the work goes, before the workers spend a while loading the backbone."""
    workers = len(client.scheduler_info()["workers"])
    print(f"Dask: {workers} worker(s) at {client.scheduler.address}; each loads the backbone once", file=sys.stderr)
    link = dashboard_link(client)
    if link:
        print(f"Dask dashboard: {link}", file=sys.stderr)


def _raise_for_shard(future, shard):
    from distributed.scheduler import KilledWorker

    try:
        future.result()
    except KilledWorker:
        raise FeatpipeError(
            f"shard {shard.split} rows {shard.start}-{shard.stop} killed every worker that ran it "
            "(out of memory? see the worker logs); rerun to resume, perhaps with a smaller shard_size"
        ) from None


def worker_attributes(client, extractor, image_store_path, fingerprint):
    """The feature file's root attributes, as every worker computes them.

    Each worker fits its extractor here (and keeps it for its shards), so the
    backbones load in parallel before any shard is sent. A worker that sees
    another image store, or would compute other numbers (other weights or
    software), is named.
    """
    futures = {
        address: client.submit(
            # Loose: if this worker dies meanwhile, another answers.
            _attributes_on_worker, extractor, str(image_store_path), workers=[address], allow_other_workers=True, pure=False
        )
        for address in sorted(client.scheduler_info()["workers"])
    }
    found = {address: worker_result(future, f"Dask worker {address}") for address, future in futures.items()}
    first, attrs = next(iter(found.items()))
    for address, other in found.items():
        if other["image_store_fingerprint"] != fingerprint:
            raise FeatpipeError(
                f"Dask worker {address} sees another image store at {image_store_path}; "
                "workers need the client's files at the same paths (a shared filesystem)"
            )
        differs = identity_mismatch(attrs, other)
        if differs:
            raise FeatpipeError(
                f"Dask workers {first} and {address} disagree on {differs} ({attrs[differs]!r} vs {other[differs]!r}); "
                "every worker needs the same featpipe, Keras and weights"
            )
    return attrs


# -- on the workers ---------------------------------------------------------

_fitted = {}
_fitting = threading.Lock()


def fitted_extractor(extractor, store):
    """This worker process's fitted copy of ``extractor``: the backbone loads once per process.

    The first call also runs one image through it, so the compiled function
    is traced before several task threads call it at once. Only the latest
    extractor is kept: a long-lived cluster serving one backbone after
    another holds one model at a time in memory.
    """
    params = extractor.get_params()
    key = json.dumps(params, sort_keys=True, default=str)
    with _fitting:
        if key not in _fitted:
            _fitted.clear()
            fitted = extractor.fit()
            fitted.transform(np.zeros((1,) + store.image_shape(), np.uint8))
            _fitted[key] = fitted
        return _fitted[key]


def _attributes_on_worker(extractor, image_store_path):
    with _open_store(image_store_path) as store:
        return fitted_extractor(extractor, store).file_attributes(store)


def extract_shard(extractor, image_store_path, shard, part_path, layout):
    """Extract one shard's rows, compress them into ``layout``'s chunks and write them to ``part_path`` atomically."""
    part_path = Path(part_path)
    if not part_path.parent.is_dir():
        raise FeatpipeError(
            f"Dask worker {_worker_address()} cannot see the folder {part_path.parent}; "
            "workers need the client's output folder at the same path (a shared filesystem)"
        )
    with _open_store(image_store_path) as store, CodecPool() as pool:
        rows = _shard_rows(fitted_extractor(extractor, store), store, shard, pool)
        write_bytes_atomically(part_path, part_bytes(rows, layout, pool))
    return str(part_path)


def part_bytes(rows, layout, pool):
    """A part file's content: ``rows`` compressed into ``layout``'s chunks on ``pool``, with their sizes (``.npz``)."""
    import io

    per_chunk = layout.rows_per_chunk
    futures = [pool.submit(layout.encode, rows[start : start + per_chunk]) for start in range(0, len(rows), per_chunk)]
    chunks = [bytes(future.result()) for future in futures]
    buffer = io.BytesIO()
    data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
    np.savez(buffer, sizes=np.array([len(chunk) for chunk in chunks], dtype=np.int64), data=data)
    return buffer.getvalue()


def _shard_rows(fitted, store, shard, pool):
    from features.engine import iter_feature_batches

    rows = np.empty((shard.stop - shard.start, fitted.feature_dim_), dtype=np.float32)
    for start, batch in iter_feature_batches(fitted, store, shard.split, shard.start, shard.stop, pool=pool):
        rows[start - shard.start : start - shard.start + len(batch)] = batch
    return rows


def _worker_address():
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:  # not on a worker (called directly, e.g. in a test)
        return "(none)"


def _open_store(path):
    if not os.path.exists(path):
        raise FeatpipeError(
            f"Dask worker {_worker_address()} cannot see the image store {path}; "
            "workers need the client's files at the same paths (a shared filesystem)"
        )
    return ImageStore(path)


def _summary(attrs, out_path, splits, done, setup_seconds, client, skipped=False):
    """:func:`features.engine.run_summary`, plus the cluster's part."""
    from features.engine import run_summary

    rows = {name: len(labels) for name, (labels, _) in splits.items()}
    return run_summary(
        attrs, out_path, rows, done.rows_computed, done.seconds, skipped,
        shards=done.shards, shards_reused=done.reused,
        workers=len(client.scheduler_info()["workers"]), setup_seconds=round(setup_seconds, 3),
    )
