"""Parallel codec I/O for HDF5 datasets chunked by rows: gzip on many cores, bytes on one thread.

HDF5 runs its gzip filter inside the read or write call, under h5py's one
global lock, so every chunk is (de)compressed on one core while other
threads wait. Here the two halves are split:

- the **caller's thread** moves raw chunk bytes with
  ``dataset.id.read_direct_chunk`` / ``write_direct_chunk`` (every h5py call
  on a file happens there, nowhere else);
- a :class:`CodecPool` of threads runs zlib and the byte shuffle on bytes and
  arrays it owns (zlib and NumPy copies release the GIL, so they use every
  core). Pool threads never touch an h5py object.

Files keep HDF5's standard filters (deflate, optionally preceded by shuffle),
so plain ``h5py`` opens them with no plugin, and chunks written by HDF5
itself decode here. Datasets with other filters (lzf, scaleoffset,
fletcher32, ...) or no chunks at all are read and written through plain
h5py instead: correctness first.

Why the direct-chunk calls take h5py's lock by hand: before h5py 3.16,
``read_direct_chunk`` and ``write_direct_chunk`` ran without it (and without
the GIL) while h5py's wheels ship an HDF5 built without thread safety. One
such call overlapping any other HDF5 call in another thread — the image
reader on another file was enough — shares HDF5's global API context and
error stack, and fails as "ring type mismatch occurred for cache entry",
other HDF5 errors or a segfault (h5py PR #2764). Taking the lock here makes
those calls exclusive with every other h5py call, on any h5py version.

Public API: :class:`CodecPool`, :class:`ChunkWriter`, :func:`write_array`,
:func:`iter_row_blocks`, :func:`read_rows`, :func:`intact_rows`, :func:`copy_chunks`,
:func:`rows_per_chunk`, :func:`row_chunk_layout` (``None`` for datasets left
to plain h5py), and the errors :class:`ChunkError`, :class:`MissingChunkError`
and :class:`CorruptChunkError`.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import zlib

import h5py
import numpy as np

try:
    # h5py's own global lock ("phil"): the only lock that excludes every other
    # h5py call in the process. A private name, but the one h5py's high-level
    # API itself takes; re-entrant, so h5py >= 3.16 taking it again inside is fine.
    from h5py._objects import phil as _HDF5_LOCK
except ImportError:  # an h5py without it would be newer than 3.16, whose direct-chunk calls lock themselves
    _HDF5_LOCK = threading.RLock()

log = logging.getLogger(__name__)

MAX_DEFAULT_THREADS = 16
# Decoded bytes a reader or writer keeps ahead by default: twice the pool's
# threads in chunks, but never more than this (an image chunk can be 40 MB).
BYTES_AHEAD = 512 << 20
_SHUFFLE = h5py.h5z.FILTER_SHUFFLE
_DEFLATE = h5py.h5z.FILTER_DEFLATE


class ChunkError(OSError):
    """A chunk on disk that can't give its rows (an ``OSError``, like h5py's own read errors)."""


class MissingChunkError(ChunkError):
    """The chunk was never written: HDF5 would return fill values for its rows."""


class CorruptChunkError(ChunkError):
    """The chunk's bytes don't decode (torn write, bad checksum, wrong length)."""


def default_threads():
    """Codec threads to use when not told: the cores this process may run on, at most 16."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_THREADS, cores))


class CodecPool:
    """Threads for zlib and byte-shuffle work on chunks: the part of HDF5 I/O that can run in parallel.

    Parameters
    ----------
    threads : int or None
        Worker threads. ``None`` means :func:`default_threads`; ``0`` or ``1``
        runs every job inline in the submitting thread (no pool at all).

    Use as a context manager, or call :meth:`close`. One pool can serve
    several readers and writers at once (e.g. the image reader and the
    feature writer of one ``extract``).
    """

    def __init__(self, threads=None):
        threads = default_threads() if threads is None else threads
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
            raise ValueError(f"threads must be None or an integer >= 0; got {threads!r}")
        self.threads = int(threads)
        self._executor = None
        if self.threads > 1:
            self._executor = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="featpipe-codec")

    def submit(self, function, *args):
        """Run ``function(*args)`` on the pool; a ``concurrent.futures.Future`` of its result."""
        if self._executor is not None:
            return self._executor.submit(function, *args)
        done = concurrent.futures.Future()
        try:
            done.set_result(function(*args))
        except BaseException as error:  # handed over through the future, as a pool would
            done.set_exception(error)
        return done

    def close(self):
        """Stop the threads; jobs not started yet are cancelled, and later ones refused."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"CodecPool(threads={self.threads})"


@dataclasses.dataclass(frozen=True)
class RowChunkLayout:
    """How a dataset chunked by whole rows stores its chunks: plain values, safe on any thread.

    Read once from the dataset, in the caller's thread, by :func:`row_chunk_layout`.

    Attributes
    ----------
    where : str
        ``"<file>:<dataset>"``, for messages.
    shape : tuple of int
        The dataset's shape, ``(n_rows, ...)``.
    chunk_shape : tuple of int
        ``(rows_per_chunk,) + shape[1:]``.
    dtype : numpy.dtype
        The stored element type (the bytes in a chunk are in this order).
    fill : scalar
        The dataset's fill value, used to pad the last, partly filled chunk.
    filters : tuple of (str, int)
        The pipeline in HDF5's order: ``("shuffle", element_size)`` and/or
        ``("deflate", level)``; empty for an unfiltered chunked dataset.
    """

    where: str
    shape: tuple
    chunk_shape: tuple
    dtype: np.dtype
    fill: object
    filters: tuple

    @property
    def rows_per_chunk(self):
        return self.chunk_shape[0]

    def chunk_rows(self, index):
        """The rows ``(start, stop)`` of chunk ``index`` that lie inside the dataset."""
        start = index * self.rows_per_chunk
        return start, min(start + self.rows_per_chunk, self.shape[0])

    def encode(self, rows):
        """The bytes HDF5's filters would store for ``rows`` (ndarray of shape (n <= rows_per_chunk, ...)).

        A short last chunk is padded with the fill value: HDF5 stores edge
        chunks at full size.
        """
        if len(rows) < self.rows_per_chunk:
            padded = np.full(self.chunk_shape, self.fill, dtype=self.dtype)
            padded[: len(rows)] = rows
            rows = padded
        # zlib and h5py take any contiguous buffer: no bytes copy of the chunk
        data = memoryview(np.ascontiguousarray(rows, dtype=self.dtype)).cast("B")
        for name, value in self.filters:
            data = _shuffle(data, value) if name == "shuffle" else zlib.compress(data, value)
        return data

    def decode(self, data, filter_mask=0, index=0):
        """The chunk ``index`` as an ndarray of ``chunk_shape`` from its stored bytes.

        ``filter_mask`` bit ``i`` set means filter ``i`` was skipped when the
        chunk was written (HDF5 skips an optional filter that fails).
        Raises :class:`CorruptChunkError` for bytes that don't decode to a whole chunk.
        """
        for position in reversed(range(len(self.filters))):
            if filter_mask & (1 << position):
                continue
            name, value = self.filters[position]
            if name == "shuffle":
                data = _unshuffle(data, value)
                continue
            try:
                data = zlib.decompress(data)
            except zlib.error as error:  # a torn or overwritten chunk: its adler32 or length is wrong
                raise CorruptChunkError(f"{self.describe_chunk(index)} does not decompress: {error}") from None
        expected = int(np.prod(self.chunk_shape)) * self.dtype.itemsize
        if len(data) != expected:
            raise CorruptChunkError(f"{self.describe_chunk(index)} holds {len(data)} bytes, expected {expected}")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.chunk_shape)

    def describe_chunk(self, index):
        start, stop = self.chunk_rows(index)
        return f"{self.where}: chunk of rows {start}:{stop}"


def _shuffle(data, element_size):
    """HDF5's shuffle filter: byte ``j`` of every element together, for each ``j`` in turn."""
    if element_size <= 1 or len(data) < 2 * element_size:
        return data  # HDF5 leaves one-byte types and single elements as they are
    whole = len(data) - len(data) % element_size
    grouped = np.frombuffer(data, dtype=np.uint8, count=whole).reshape(-1, element_size).T.tobytes()
    return grouped + bytes(data[whole:]) if whole < len(data) else grouped


def _unshuffle(data, element_size):
    """The inverse of :func:`_shuffle`."""
    if element_size <= 1 or len(data) < 2 * element_size:
        return data
    whole = len(data) - len(data) % element_size
    spread = np.frombuffer(data, dtype=np.uint8, count=whole).reshape(element_size, -1).T.tobytes()
    return spread + bytes(data[whole:]) if whole < len(data) else spread


def row_chunk_layout(dataset):
    """The :class:`RowChunkLayout` of ``dataset``, or ``None`` where this module can't do its codec work.

    ``None`` means plain h5py reads and writes: a dataset that is not chunked,
    chunked across a row, of a non-numeric type, or filtered by anything but
    HDF5's shuffle and deflate (in that order). Call in the thread that owns the file.
    """
    with _HDF5_LOCK:
        where = f"{dataset.file.filename}:{dataset.name}"
        plist = dataset.id.get_create_plist()
        chunks, shape, dtype = dataset.chunks, dataset.shape, dataset.dtype
        pipeline = [plist.get_filter(i)[::2] for i in range(plist.get_nfilters())]  # (code, cd_values)
        fill = dataset.fillvalue
    reason = _unsupported(chunks, shape, dtype, pipeline)
    if reason:
        log.debug("%s: plain h5py I/O (%s)", where, reason)
        return None
    filters = tuple(("shuffle", int(values[0])) if code == _SHUFFLE else ("deflate", int(values[0])) for code, values in pipeline)
    return RowChunkLayout(where, tuple(shape), tuple(chunks), np.dtype(dtype), fill, filters)


def _unsupported(chunks, shape, dtype, pipeline):
    """Why the direct-chunk path can't serve this dataset, or ``""``."""
    if chunks is None:
        return "not chunked"
    if tuple(chunks[1:]) != tuple(shape[1:]):
        return f"chunks {chunks} split rows of shape {shape}"
    if dtype.kind not in "biuf" or dtype.hasobject:
        return f"element type {dtype}"
    codes = [code for code, _ in pipeline]
    if codes not in ([], [_DEFLATE], [_SHUFFLE], [_SHUFFLE, _DEFLATE]):
        return f"filters {codes} (only shuffle then deflate are decoded here)"
    if any(len(values) < 1 for _, values in pipeline):
        return "a filter without its parameters"
    return ""


def rows_per_chunk(dataset):
    """Rows in one chunk of ``dataset`` (1 if it is not chunked): writes start at a multiple of it."""
    with _HDF5_LOCK:
        chunks = dataset.chunks
    return chunks[0] if chunks else 1


class ChunkWriter:
    """Write row blocks, in order, into a dataset chunked by rows: whole chunks compressed on a pool.

    Rows are taken in blocks of any size; each whole chunk is compressed on
    ``pool`` and written, in row order, with ``write_direct_chunk`` from the
    thread that calls :meth:`write` and :meth:`flush` (the thread that owns
    the file). The rows of an unfinished chunk wait in memory until the
    chunk fills up, or until the dataset's last row: a chunk is written once,
    never rewritten. At most ``max_in_flight`` chunks are being compressed or
    wait to be written, so memory stays bounded.

    Parameters
    ----------
    dataset : h5py.Dataset
        Chunked by whole rows for the fast path; anything else is written with
        plain ``dataset[a:b] = rows`` (logged at debug level).
    pool : CodecPool
    start : int
        The first row to write: a multiple of :func:`rows_per_chunk` (the
        rows before it are on disk already, e.g. after a resume).
    max_in_flight : int or None
        Chunks compressed ahead of the disk; ``None`` means twice the pool's
        threads, within :data:`BYTES_AHEAD` of raw chunks.

    Attributes
    ----------
    rows_written : int
        Rows handed to HDF5 so far, counted from row 0: ``rows_written`` rows
        are safe once the file is flushed. Never beyond a chunk boundary or
        the dataset's end.

    Every error (a compression failure, ``OSError`` from HDF5 such as a full
    disk) is raised in the calling thread; after one, the writer refuses
    further rows (``rows_written`` stays exact).

    Examples
    --------
    >>> with CodecPool() as pool, ChunkWriter(file["train/features"], pool) as writer:  # doctest: +SKIP
    ...     for rows in batches:
    ...         writer.write(rows)
    ...         file.flush()  # then record writer.rows_written as done
    """

    def __init__(self, dataset, pool, start=0, max_in_flight=None):
        self._dataset = dataset
        self._pool = pool
        self._layout = row_chunk_layout(dataset)
        with _HDF5_LOCK:
            self._shape, self._dtype = dataset.shape, dataset.dtype
        per_chunk = self._layout.rows_per_chunk if self._layout else rows_per_chunk(dataset)
        if not 0 <= start <= self._shape[0] or (start % per_chunk and start != self._shape[0]):
            raise ValueError(
                f"start must be a multiple of the {per_chunk} rows per chunk within 0..{self._shape[0]}; "
                f"got {start} (resume from row {start - start % per_chunk})"
            )
        self.rows_written = start
        self._rows_taken = start
        self._pending = []
        self._in_flight = collections.deque()
        self._max_in_flight = _depth(max_in_flight, pool, self._layout)
        self._failed = None
        self._closed = False
        if self._layout is not None:
            log.debug("%s: direct chunk writes from row %d, encoded on %r", self._layout.where, start, pool)

    @property
    def rows_taken(self):
        """Rows given to :meth:`write` so far, counted from row 0: the row the next block starts at."""
        return self._rows_taken

    @property
    def pending_rows(self):
        """Rows taken but not yet handed to HDF5 (waiting for their chunk to fill, or in flight)."""
        return self._rows_taken - self.rows_written

    def write(self, rows):
        """Take ``rows`` (ndarray of shape (n, ...) and the dataset's dtype) after the rows taken so far.

        Returns
        -------
        int
            :attr:`rows_written`.
        """
        self._check_usable()
        rows = self._checked_rows(rows)
        if self._layout is None:
            return self._write_plain(rows)
        self._pending.append(rows)
        self._rows_taken += len(rows)
        self._submit_whole_chunks()
        return self.rows_written

    def flush(self):
        """Hand every whole chunk taken so far to HDF5 (the rows of an unfinished chunk keep waiting).

        Returns
        -------
        int
            :attr:`rows_written`.
        """
        self._check_usable()
        while self._in_flight:
            self._write_oldest()
        return self.rows_written

    def write_encoded(self, chunks):
        """Hand chunks compressed elsewhere (each the bytes of :meth:`RowChunkLayout.encode`) to HDF5, in order.

        For rows whose codec work was done by another process (a Dask worker):
        the chunks go on from :attr:`rows_taken`, which must lie on a chunk
        boundary, as does every chunk but the dataset's last.

        Returns
        -------
        int
            :attr:`rows_written`.
        """
        self._check_usable()
        if self._layout is None or self._pending:
            raise ValueError(f"{self._where()}: encoded chunks need a direct-chunk layout and no rows waiting for their chunk")
        self.flush()
        for data in chunks:
            if self._rows_taken >= self._shape[0]:
                raise ValueError(f"a chunk past the {self._shape[0]} rows of {self._where()}")
            self._in_flight.append((self._rows_taken, _done(data)))
            self._rows_taken = min(self._rows_taken + self._layout.rows_per_chunk, self._shape[0])
            self._write_oldest()
        return self.rows_written

    def close(self):
        """Stop taking rows; drop what was not handed to HDF5 (:meth:`flush` first to keep it)."""
        for _, future in self._in_flight:
            future.cancel()
        self._in_flight.clear()
        self._pending = []
        self._rows_taken = self.rows_written
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.close()

    def _check_usable(self):
        if self._failed is not None:
            raise RuntimeError(
                f"writing {self._where()} failed earlier ({self._failed!r}); no more rows are taken"
            ) from self._failed
        if self._closed:
            raise RuntimeError(f"the writer of {self._where()} is closed")

    def _where(self):
        return self._layout.where if self._layout else "the dataset"

    def _checked_rows(self, rows):
        rows = np.asarray(rows)
        if rows.dtype != self._dtype or rows.shape[1:] != self._shape[1:]:
            raise ValueError(
                f"rows must be {self._dtype} of shape (n, {', '.join(map(str, self._shape[1:]))}) "
                f"like {self._where()}; got {rows.dtype} of shape {rows.shape}"
            )
        if self._rows_taken + len(rows) > self._shape[0]:
            raise ValueError(
                f"rows {self._rows_taken}:{self._rows_taken + len(rows)} go past the {self._shape[0]} rows of {self._where()}"
            )
        return rows

    def _write_plain(self, rows):
        start = self._rows_taken
        try:
            self._dataset[start : start + len(rows)] = rows
        except BaseException as error:
            self._failed = error
            raise
        self._rows_taken = self.rows_written = start + len(rows)
        return self.rows_written

    def _submit_whole_chunks(self):
        per_chunk, end = self._layout.rows_per_chunk, self._shape[0]
        # Copies of the caller's rows, a chunk at a time: it may reuse its buffer
        # once write() returns, and its whole block is never copied at once.
        *waiting, latest = self._pending  # waiting: our copies, less than a chunk in all
        row = self._rows_taken - sum(map(len, self._pending))
        if len(latest) + sum(map(len, waiting)) < per_chunk and self._rows_taken < end:
            self._pending[-1] = latest.copy()  # joined only when a chunk is there
            return
        if waiting:  # finish the chunk the earlier rows began
            missing = per_chunk - sum(map(len, waiting))
            head = np.concatenate(waiting + [latest[:missing]])
            self._submit(row, head)
            row, latest = row + len(head), latest[missing:]
        cut = 0
        while len(latest) - cut >= per_chunk or (cut < len(latest) and self._rows_taken == end):
            rows = latest[cut : cut + per_chunk].copy()
            self._submit(row + cut, rows)
            cut += len(rows)
        self._pending = [latest[cut:].copy()] if cut < len(latest) else []

    def _submit(self, row, rows):
        while len(self._in_flight) >= self._max_in_flight:
            self._write_oldest()
        self._in_flight.append((row, self._pool.submit(self._layout.encode, rows)))
        # Hand over what is ready already, so the disk works while the pool compresses.
        while self._in_flight and self._in_flight[0][1].done():
            self._write_oldest()

    def _write_oldest(self):
        row, future = self._in_flight.popleft()
        offset = (row,) + (0,) * (len(self._shape) - 1)
        try:
            data = future.result()
            with _HDF5_LOCK:
                self._dataset.id.write_direct_chunk(offset, data, 0)
        except BaseException as error:
            self._failed = error
            self.close()
            raise
        self.rows_written = min(row + self._layout.rows_per_chunk, self._shape[0])


def write_array(dataset, rows, pool, start=0):
    """Write ``rows`` into ``dataset`` from row ``start`` on (a multiple of :func:`rows_per_chunk`).

    For writers that hold a whole array (``prepare``, a shard of the Dask
    join): :class:`ChunkWriter` in one call.

    Parameters
    ----------
    dataset : h5py.Dataset
    rows : ndarray of shape (n, ...), the dataset's dtype
    pool : CodecPool
    start : int

    Returns
    -------
    int
        The row after the last one written.
    """
    per_chunk, end = rows_per_chunk(dataset), start + len(rows)
    with _HDF5_LOCK:
        total = dataset.shape[0]
    if end % per_chunk and end != total:
        raise ValueError(
            f"rows {start}:{end} end inside a chunk of {per_chunk} rows and before the dataset's "
            f"{total}: write_array writes whole chunks; use ChunkWriter to go on later"
        )
    with ChunkWriter(dataset, pool, start=start) as writer:
        writer.write(rows)
    return end


def iter_row_blocks(dataset, pool, start=0, stop=None, *, lookahead=None, missing="raise"):
    """Yield rows ``start:stop`` of ``dataset`` in order, one block per chunk, decompressed on a pool.

    Raw chunks are read with ``read_direct_chunk`` in the iterating thread
    (which must own the file) and decoded by ``pool`` at most ``lookahead``
    chunks ahead. A dataset this module can't decode (see
    :func:`row_chunk_layout`) is read with plain h5py, chunk by chunk.

    Parameters
    ----------
    dataset : h5py.Dataset
    pool : CodecPool
    start, stop : int
        Row range; ``stop=None`` means the dataset's end.
    lookahead : int or None
        Chunks read and decoded ahead of the consumer; ``None`` means twice
        the pool's threads, within :data:`BYTES_AHEAD` of decoded chunks.
    missing : {"raise", "fill"}
        A chunk never written raises :class:`MissingChunkError` (default),
        or comes back as the fill value, as plain h5py reads it. (The plain
        h5py fallback always fills.)

    Yields
    ------
    row : int
        The first row of the block.
    block : ndarray of shape (n, ...) and the dataset's dtype
        Rows ``row:row + n``; ``n`` is at most the rows per chunk.

    Raises
    ------
    MissingChunkError, CorruptChunkError, OSError
        At the block that can't be had (h5py's own error where HDF5 can't read
        it), after every block before it.
    """
    if missing not in ("raise", "fill"):
        raise ValueError(f"missing must be 'raise' or 'fill'; got {missing!r}")
    layout = row_chunk_layout(dataset)
    start, stop = _row_range(dataset, start, stop)
    if layout is None:
        return _iter_plain_blocks(dataset, start, stop)
    log.debug("%s: direct chunk reads, decoded on %r", layout.where, pool)
    read = functools.partial(_read_chunk, dataset, layout, pool=pool, missing=missing, writable=True)
    return _iter_direct_blocks(layout, _errors_in_order(read), start, stop, _depth(lookahead, pool, layout))


def _iter_direct_blocks(layout, read, start, stop, depth):
    indices = range(start // layout.rows_per_chunk, -(-stop // layout.rows_per_chunk))
    with contextlib.closing(_in_order(read, indices, depth)) as chunks:
        for index, future in chunks:
            yield _clip(layout, index, future, start, stop)


def _depth(chunks, pool, layout):
    """Chunks to keep ahead: ``chunks`` if given, else twice the pool's threads within :data:`BYTES_AHEAD`."""
    if chunks is not None:
        if chunks < 1:
            raise ValueError(f"lookahead and max_in_flight must be None or >= 1; got {chunks}")
        return int(chunks)
    chunk_bytes = int(np.prod(layout.chunk_shape)) * layout.dtype.itemsize if layout else 1
    return max(2, min(2 * max(1, pool.threads), BYTES_AHEAD // chunk_bytes))


def _in_order(read, indices, depth):
    """Yield ``(index, read(index))`` in order, calling ``read`` up to ``depth`` indices ahead.

    ``read`` runs here (it does the h5py calls) and returns a future of the
    pool's work; futures not yet yielded are cancelled when the consumer stops.
    """
    ahead = collections.deque()
    try:
        for index in indices:
            ahead.append((index, read(index)))
            if len(ahead) > depth:
                yield ahead.popleft()
        while ahead:
            yield ahead.popleft()
    finally:
        for _, future in ahead:
            future.cancel()


def read_rows(dataset, pool, start=0, stop=None, *, missing="raise"):
    """Rows ``start:stop`` of ``dataset`` as one ndarray of shape (stop - start, ...), read as :func:`iter_row_blocks` does."""
    start, stop = _row_range(dataset, start, stop)
    with _HDF5_LOCK:
        out = np.empty((stop - start,) + dataset.shape[1:], dtype=dataset.dtype)
    for row, block in iter_row_blocks(dataset, pool, start, stop, missing=missing):
        out[row - start : row - start + len(block)] = block
    return out


def _row_range(dataset, start, stop):
    with _HDF5_LOCK:
        total = dataset.shape[0]
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise ValueError(f"rows {start}:{stop} are not within the dataset's {total} rows")
    return int(start), int(stop)


def _read_chunk(dataset, layout, index, *, pool, missing, writable=False):
    """Read chunk ``index``'s stored bytes here; a future of its decoded rows (ndarray of ``chunk_shape``)."""
    offset = (index * layout.rows_per_chunk,) + (0,) * (len(layout.shape) - 1)
    with _HDF5_LOCK:
        allocated = dataset.id.get_chunk_info_by_coord(offset).byte_offset is not None
        if allocated:
            filter_mask, data = dataset.id.read_direct_chunk(offset)
    if not allocated:
        if missing == "fill":
            return pool.submit(np.full, layout.chunk_shape, layout.fill, layout.dtype)
        start, stop = layout.chunk_rows(index)
        return _failed(MissingChunkError(f"{layout.where}: rows {start}:{stop} were never written (chunk not on disk)"))
    if writable:  # h5py hands out arrays one may write to; so do we (the copy runs on the pool)
        return pool.submit(lambda: layout.decode(data, filter_mask, index).copy())
    return pool.submit(layout.decode, data, filter_mask, index)


def _done(result):
    future = concurrent.futures.Future()
    future.set_result(result)
    return future


def _failed(error):
    future = concurrent.futures.Future()
    future.set_exception(error)
    return future


def _errors_in_order(read, wrap=lambda index, error: error):
    """``read``, with its errors handed over as failed futures: raised in row order, not ahead."""

    def read_or_fail(index):
        try:
            return read(index)
        except Exception as error:  # e.g. HDF5 can't read an address past the end of a truncated file
            return _failed(wrap(index, error))

    return read_or_fail


def _clip(layout, index, future, start, stop):
    chunk_start, chunk_stop = layout.chunk_rows(index)
    first, last = max(start, chunk_start), min(stop, chunk_stop)
    return first, future.result()[first - chunk_start : last - chunk_start]


def _iter_plain_blocks(dataset, start, stop):
    with _HDF5_LOCK:
        shape, itemsize = dataset.shape, dataset.dtype.itemsize
    per_block = rows_per_chunk(dataset)
    if per_block == 1:  # not chunked: blocks of about a MiB
        per_block = max(1, (1 << 20) // max(1, itemsize * int(np.prod(shape[1:]))))
    row = start
    while row < stop:
        end = min(stop, (row // per_block + 1) * per_block)  # whole chunks: each decoded once
        yield row, dataset[row:end]
        row = end


def copy_chunks(source, target, stop):
    """Copy the stored chunks holding rows ``0:stop`` of ``source`` into ``target``, bytes as they are.

    Both datasets must have the same row-chunk layout (shape, chunks, type,
    filters); ``stop`` lies on a chunk boundary or at the end. No codec work:
    how a resume moves the rows it verified into a fresh file.
    """
    layout, other = row_chunk_layout(source), row_chunk_layout(target)
    if layout is None or other is None or dataclasses.replace(layout, where="") != dataclasses.replace(other, where=""):
        raise ValueError(f"copy_chunks needs two datasets with one direct-chunk layout; got {layout} and {other}")
    if stop % layout.rows_per_chunk and stop != layout.shape[0]:
        raise ValueError(f"stop={stop} is inside a chunk of {layout.rows_per_chunk} rows")
    for index in range(-(-stop // layout.rows_per_chunk)):
        offset = (index * layout.rows_per_chunk,) + (0,) * (len(layout.shape) - 1)
        with _HDF5_LOCK:
            filter_mask, data = source.id.read_direct_chunk(offset)
            target.id.write_direct_chunk(offset, data, filter_mask)


def intact_rows(dataset, claimed_rows, pool, *, lookahead=None):
    """How many leading rows of ``dataset`` are really on disk, of the ``claimed_rows`` a file says it has.

    For a resume after a crash, a kill or a full disk: every chunk covering
    rows ``0:claimed_rows`` is read back and must be allocated and decode
    cleanly (zlib's adler32 and the chunk's length catch a torn chunk). The
    count stops at the first chunk that fails; the caller recomputes from
    there and never trusts the rest. Failures are logged at info level.

    Datasets this module can't decode are checked through plain h5py reads,
    chunk by chunk (HDF5 then checks what its filters can); an unfiltered or
    contiguous dataset can only show whether its chunks exist.

    Parameters
    ----------
    dataset : h5py.Dataset
    claimed_rows : int
        Rows the file claims (e.g. its ``rows_written`` attribute); more than
        the dataset holds counts as all of them.
    pool : CodecPool
    lookahead : int or None
        Chunks decoded ahead; as in :func:`iter_row_blocks`.

    Returns
    -------
    int
        At most ``claimed_rows``; a multiple of the rows per chunk unless it
        equals ``claimed_rows``.
    """
    if claimed_rows < 0:
        raise ValueError(f"claimed_rows must be >= 0; got {claimed_rows}")
    layout = row_chunk_layout(dataset)
    claimed_rows = min(int(claimed_rows), _row_range(dataset, 0, None)[1])
    if layout is None:
        return _intact_rows_plain(dataset, claimed_rows)
    indices = range(-(-claimed_rows // layout.rows_per_chunk))
    read = _errors_in_order(
        functools.partial(_read_chunk, dataset, layout, pool=pool, missing="raise"),
        wrap=lambda index, error: CorruptChunkError(f"{layout.describe_chunk(index)} can't be read: {error}"),
    )
    with contextlib.closing(_in_order(read, indices, _depth(lookahead, pool, layout))) as chunks:
        for index, future in chunks:
            if not _chunk_is_intact(layout, index, future):
                return layout.chunk_rows(index)[0]
    return claimed_rows


def _chunk_is_intact(layout, index, future):
    try:
        future.result()
        return True
    except ChunkError as error:
        log.info("%s; rows from %d on are recomputed", error, layout.chunk_rows(index)[0])
        return False


def _intact_rows_plain(dataset, claimed_rows):
    per_chunk = rows_per_chunk(dataset)
    with _HDF5_LOCK:
        chunked = dataset.chunks is not None
        if not chunked:
            return claimed_rows if dataset.id.get_offset() is not None or not claimed_rows else 0
    for start in range(0, claimed_rows, per_chunk):
        offset = (start,) + (0,) * (dataset.ndim - 1)
        try:
            with _HDF5_LOCK:
                if dataset.id.get_chunk_info_by_coord(offset).byte_offset is None:
                    log.info("%s: rows from %d on were never written; recomputed", dataset.name, start)
                    return start
            dataset[start : min(start + per_chunk, claimed_rows)]
        except Exception as error:  # whatever HDF5's filters reject (fletcher32, lzf, ...)
            log.info("%s: rows from %d on don't read back (%s); recomputed", dataset.name, start, error)
            return start
    return claimed_rows
