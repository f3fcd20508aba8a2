"""Streaming I/O for extraction: batches read ahead by one thread, rows written behind by another.

Three threads share an extraction so the accelerator never waits for the disk:

- a **reader** thread pulls uint8 images from the image store, chunk by
  chunk (decompressed on a :class:`~storage.chunkio.CodecPool`), cuts them
  into batches and, where the backend allows, starts copying each batch to
  the device (:func:`iter_image_batches`);
- the **calling** thread runs the compiled model on each batch;
- a **writer** thread appends the rows to the feature file, whose chunks are
  compressed on the same pool (:class:`RowSink`).

Each file's HDF5 calls happen in one thread at a time, and the codec work
happens on the pool, off h5py's lock (see :mod:`storage.chunkio`). Queues
are short, so memory stays bounded however large the store. Used by
:mod:`features.engine` and, on each Dask worker, :mod:`features.distributed`.
"""

import queue
import threading

import numpy as np

PREFETCH_BATCHES = 3


class _Failed:
    """A worker thread's exception, carried through a queue to the consumer."""

    def __init__(self, error):
        self.error = error


_DONE = object()


def _put(items, item, stop):
    """Put ``item`` into ``items``, giving up once ``stop`` is set (the consumer left)."""
    while not stop.is_set():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def iter_image_batches(store, split, start=0, stop=None, batch_size=32, *, pool, prefetch=PREFETCH_BATCHES, stage=None):
    """Yield ``(start_row, batch)`` for rows ``start:stop`` of ``split``, read ahead by a thread.

    Parameters
    ----------
    store : ImageStore
    split : {"train", "test"}
    start, stop : int
        Row range; ``stop=None`` means the end of the split.
    batch_size : int
    pool : CodecPool
        Decompresses the store's chunks.
    prefetch : int
        Batches kept waiting at most.
    stage : callable or None
        ``stage(images) -> batch``, run on the reader thread: e.g. start the
        copy to the device (:meth:`FeatureExtractor.stage`). Default: the
        images as read.

    Yields
    ------
    start_row : int
    batch : what ``stage`` returns for images of shape (n, height, width, channels), uint8;
        ``n`` is ``batch_size`` except for the last batch
    """
    stop = store.num_rows(split) if stop is None else min(stop, store.num_rows(split))
    stage = stage or (lambda images: images)
    batches = ((row, stage(images)) for row, images in _batched(store.iter_images(split, start, stop, pool), batch_size))
    return read_ahead(batches, prefetch, name=f"featpipe-reader-{split}")


def read_ahead(items, prefetch=PREFETCH_BATCHES, name="featpipe-reader"):
    """Yield what the iterable ``items`` yields, in order, computed ahead by a thread of its own.

    At most ``prefetch`` items wait. An exception raised while computing an
    item is raised here, in the consumer's thread; a consumer that stops
    early stops the thread too. Work that releases the GIL (HDF5 reads,
    zlib, Pillow's decoding and resizing) then overlaps the consumer's.
    """
    waiting = queue.Queue(maxsize=prefetch)
    leave = threading.Event()

    def produce():
        try:
            for item in items:
                if not _put(waiting, item, leave):
                    return
            _put(waiting, _DONE, leave)
        except BaseException as error:  # handed to the consumer, which re-raises it
            _put(waiting, _Failed(error), leave)

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := waiting.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        leave.set()
        thread.join()


def _batched(blocks, batch_size):
    """``(row, images)`` blocks of any size, re-cut into batches of ``batch_size`` (the last may be short)."""
    waiting, first_row, count = [], None, 0
    for row, block in blocks:
        first_row = row if first_row is None else first_row
        waiting.append(block)
        count += len(block)
        while count >= batch_size:
            joined = waiting[0] if len(waiting) == 1 else np.concatenate(waiting)
            yield first_row, joined[:batch_size]
            rest = joined[batch_size:]
            waiting, first_row, count = ([rest] if len(rest) else []), first_row + batch_size, len(rest)
    if count:
        yield first_row, np.concatenate(waiting) if len(waiting) > 1 else waiting[0]


class RowSink:
    """Append rows to a :class:`~storage.feature_store.FeatureWriter` from a thread of its own.

    Compression (on the writer's codec pool) and flushing then overlap the
    next forward pass. When the writer lags, the rows waiting for one split
    go into one append, so one flush covers several batches. The queue is
    short, so memory stays bounded; a write error surfaces in the caller on
    its next :meth:`put` or on :meth:`close`.
    """

    def __init__(self, writer, depth=PREFETCH_BATCHES):
        self._writer = writer
        self._rows = queue.Queue(maxsize=depth)
        self._leave = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._write, name="featpipe-writer", daemon=True)
        self._thread.start()

    def _write(self):
        while (item := self._rows.get()) is not _DONE:
            split, rows = item
            blocks = [rows]
            # (Only this thread takes items, so the head of the queue stays put.)
            while self._rows.queue and self._rows.queue[0] is not _DONE and self._rows.queue[0][0] == split:
                blocks.append(self._rows.get_nowait()[1])
            try:
                self._writer.append(split, np.concatenate(blocks) if len(blocks) > 1 else rows)
            except BaseException as error:  # re-raised in the caller's thread
                self._error = error
                self._leave.set()
                return

    def put(self, split, rows):
        """Queue ``rows`` (ndarray of shape (n, feature_dim)) of ``split``, in row order."""
        self._raise_if_failed()
        _put(self._rows, (split, rows), self._leave)
        self._raise_if_failed()

    def close(self, check=True):
        """Write every row handed over, then stop the thread.

        Also after an interruption: rows already computed are worth keeping
        for the resume. ``check=False`` leaves a write error unraised (when
        another error is on its way up already).
        """
        _put(self._rows, _DONE, self._leave)
        self._thread.join()
        if check:
            self._raise_if_failed()

    def _raise_if_failed(self):
        if self._error is not None:
            raise self._error
