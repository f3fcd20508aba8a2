"""Parallel chunk codec I/O (storage/chunkio.py): same bytes as HDF5's filters, errors that arrive, resumes that hold."""

import errno
import gc
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from storage import chunkio
from storage.chunkio import (
    ChunkWriter,
    CodecPool,
    CorruptChunkError,
    MissingChunkError,
    intact_rows,
    iter_row_blocks,
    read_rows,
    write_array,
)

REPO = Path(__file__).resolve().parents[1]

# name -> create_dataset options; every layout the direct-chunk path serves
CODEC_LAYOUTS = {
    "gzip": {"compression": "gzip", "compression_opts": 1},
    "gzip+shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "shuffle": {"shuffle": True},
    "unfiltered": {},
}
# layouts it must leave to plain h5py
PLAIN_LAYOUTS = {
    "lzf": {"chunks": (8, 5), "compression": "lzf"},
    "scaleoffset": {"chunks": (8, 5), "scaleoffset": 3},
    "fletcher32": {"chunks": (8, 5), "compression": "gzip", "fletcher32": True},
    "contiguous": {},
    "chunks across a row": {"chunks": (8, 2)},
}


def relu_rows(n, dim=5, seed=0):
    """Feature-like float32 rows: half zeros, as after a ReLU."""
    return np.maximum(np.random.default_rng(seed).normal(size=(n, dim)), 0).astype(np.float32)


@pytest.fixture(params=[0, 2], ids=["inline", "2 threads"])
def pool(request):
    with CodecPool(request.param) as codec_pool:
        yield codec_pool


@pytest.fixture
def h5file(tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as file:
        yield file


def write_in_blocks(writer, rows, sizes):
    """Feed ``rows`` to ``writer`` in blocks of the given sizes, cycling."""
    start, turn = 0, 0
    while start < len(rows):
        size = sizes[turn % len(sizes)]
        writer.write(rows[start : start + size])
        start, turn = start + size, turn + 1


@pytest.mark.parametrize("layout", CODEC_LAYOUTS)
def test_rows_written_here_read_back_identically_through_plain_h5py(h5file, pool, layout):
    rows = relu_rows(61)  # 7 whole chunks and a partly filled one
    dataset = h5file.create_dataset("f", (61, 5), "f4", chunks=(8, 5), **CODEC_LAYOUTS[layout])
    with ChunkWriter(dataset, pool) as writer:
        write_in_blocks(writer, rows, sizes=[1, 3, 20, 8, 2])
    assert writer.rows_written == 61
    np.testing.assert_array_equal(dataset[...], rows)


def test_the_caller_may_reuse_its_buffer_once_write_returns(h5file, pool):
    rows = relu_rows(64)
    dataset = h5file.create_dataset("f", (64, 5), "f4", chunks=(8, 5), compression="gzip")
    buffer = np.empty((16, 5), np.float32)  # one batch buffer, refilled for every batch
    start, sizes = 0, [16, 5, 3, 12]  # whole chunks alone, a part waiting, parts joined
    with ChunkWriter(dataset, pool, max_in_flight=8) as writer:
        while start < 64:
            batch = buffer[: min(sizes[0], 64 - start)]
            batch[:] = rows[start : start + len(batch)]
            writer.write(batch)
            buffer[:] = -1
            start, sizes = start + len(batch), sizes[1:] + sizes[:1]
    np.testing.assert_array_equal(dataset[...], rows)


@pytest.mark.parametrize("layout", CODEC_LAYOUTS)
def test_chunks_written_by_plain_h5py_decode_here(h5file, pool, layout):
    images = np.random.default_rng(1).integers(0, 256, size=(21, 4, 4, 3), dtype=np.uint8)
    floats = relu_rows(21, dim=7)
    for name, data in (("images", images), ("floats", floats)):
        h5file.create_dataset(name, data=data, chunks=(4,) + data.shape[1:], **CODEC_LAYOUTS[layout])
        np.testing.assert_array_equal(read_rows(h5file[name], pool), data)
        np.testing.assert_array_equal(read_rows(h5file[name], pool, 3, 18), data[3:18])


def test_the_chunk_bytes_before_compression_are_hdf5s_own_padding_included(h5file, pool):
    rows = relu_rows(20, dim=3)
    ours = h5file.create_dataset("ours", (20, 3), "f4", chunks=(8, 3), compression="gzip", shuffle=True, fillvalue=7.0)
    theirs = h5file.create_dataset("theirs", (20, 3), "f4", chunks=(8, 3), compression="gzip", shuffle=True, fillvalue=7.0)
    write_array(ours, rows, pool)
    theirs[...] = rows
    for row in (0, 8, 16):  # the last chunk holds 4 rows and 4 of padding
        mask_ours, stored_ours = ours.id.read_direct_chunk((row, 0))
        mask_theirs, stored_theirs = theirs.id.read_direct_chunk((row, 0))
        assert mask_ours == mask_theirs == 0
        assert zlib.decompress(stored_ours) == zlib.decompress(stored_theirs)


def test_blocks_come_one_per_chunk_in_row_order_and_may_be_written_to(h5file, pool):
    data = relu_rows(30)
    dataset = h5file.create_dataset("f", data=data, chunks=(8, 5), compression="gzip")
    blocks = list(iter_row_blocks(dataset, pool, 5, 27))
    assert [(row, len(block)) for row, block in blocks] == [(5, 3), (8, 8), (16, 8), (24, 3)]
    blocks[0][1][:] = -1  # like an h5py read: the caller's own array
    np.testing.assert_array_equal(np.concatenate([block for _, block in blocks[1:]]), data[8:27])


class Recording:
    """A stand-in dataset that forwards to a real one and notes which thread calls it, and when."""

    def __init__(self, dataset, fail_write_at=None, fail_read_at=None, on_call=None):
        self._dataset = dataset
        self.threads = set()
        self.direct_writes = 0
        self.direct_reads = 0
        self._fail_write_at = fail_write_at
        self._fail_read_at = fail_read_at
        self._on_call = on_call or (lambda name: None)
        self.id = _RecordingID(self)

    def __getattr__(self, name):
        self.threads.add(threading.get_ident())
        return getattr(self._dataset, name)

    def __getitem__(self, key):
        self.threads.add(threading.get_ident())
        return self._dataset[key]

    def __setitem__(self, key, value):
        self.threads.add(threading.get_ident())
        self._dataset[key] = value


class _RecordingID:
    def __init__(self, owner):
        self._owner = owner

    def __getattr__(self, name):
        self._owner.threads.add(threading.get_ident())
        return getattr(self._owner._dataset.id, name)

    def write_direct_chunk(self, offset, data, filter_mask=0):
        owner = self._owner
        owner.threads.add(threading.get_ident())
        owner._on_call("write_direct_chunk")
        if owner.direct_writes == owner._fail_write_at:
            raise OSError(errno.ENOSPC, "No space left on device (a fake full disk)")
        owner.direct_writes += 1
        return owner._dataset.id.write_direct_chunk(offset, data, filter_mask)

    def read_direct_chunk(self, offset):
        owner = self._owner
        owner.threads.add(threading.get_ident())
        owner._on_call("read_direct_chunk")
        if owner.direct_reads == owner._fail_read_at:
            raise OSError(errno.EIO, "Input/output error (a fake bad sector)")
        owner.direct_reads += 1
        return owner._dataset.id.read_direct_chunk(offset)


def test_h5py_is_called_from_the_callers_thread_only_and_under_its_lock(h5file):
    """The cause of the CI failure: h5py < 3.16 ran direct-chunk calls without its lock."""

    def lock_is_held_here(name):
        # Another thread must not get h5py's lock while a direct-chunk call runs.
        taken = []
        probe = threading.Thread(target=lambda: taken.append(chunkio._HDF5_LOCK.acquire(False)))
        probe.start()
        probe.join()
        if taken[0]:
            chunkio._HDF5_LOCK.release()
        assert not taken[0], f"{name} ran without h5py's lock"

    assert chunkio._HDF5_LOCK is h5py._objects.phil
    rows = relu_rows(40)
    dataset = Recording(h5file.create_dataset("f", (40, 5), "f4", chunks=(4, 5), compression="gzip"), on_call=lock_is_held_here)
    with CodecPool(4) as pool:
        with ChunkWriter(dataset, pool) as writer:
            write_in_blocks(writer, rows, sizes=[7])
        np.testing.assert_array_equal(read_rows(dataset, pool), rows)
        assert intact_rows(dataset, 40, pool) == 40
    assert dataset.direct_writes == 10 and dataset.direct_reads == 20
    assert dataset.threads == {threading.get_ident()}


def test_the_writer_keeps_a_bounded_number_of_chunks_in_flight(h5file):
    dataset = Recording(h5file.create_dataset("f", (400, 5), "f4", chunks=(4, 5), compression="gzip"))
    in_flight = []

    class CountingPool(CodecPool):
        submitted = 0

        def submit(self, function, *args):
            self.submitted += 1
            in_flight.append(self.submitted - dataset.direct_writes)
            return super().submit(function, *args)

    with CountingPool(2) as pool, ChunkWriter(dataset, pool, max_in_flight=3) as writer:
        for start in range(0, 400, 50):
            writer.write(relu_rows(50, seed=start))
    assert dataset.direct_writes == 100
    assert max(in_flight) == 3


def test_the_reader_reads_a_bounded_number_of_chunks_ahead(h5file, pool):
    dataset = Recording(h5file.create_dataset("f", data=relu_rows(400), chunks=(4, 5), compression="gzip"))
    blocks = iter_row_blocks(dataset, pool, lookahead=3)
    next(blocks)
    assert dataset.direct_reads == 4  # the block yielded and three ahead
    blocks.close()


def test_by_default_big_chunks_are_read_ahead_within_a_byte_budget(h5file, monkeypatch):
    dataset = Recording(h5file.create_dataset("f", data=relu_rows(400), chunks=(4, 5), compression="gzip"))
    monkeypatch.setattr(chunkio, "BYTES_AHEAD", 5 * 4 * 5 * 4)  # five chunks' worth
    with CodecPool(8) as pool:  # would be 16 chunks ahead by the thread count
        blocks = iter_row_blocks(dataset, pool)
        next(blocks)
        assert dataset.direct_reads == 6  # the block yielded and five ahead
        blocks.close()


def test_a_read_error_arrives_in_row_order_and_the_chunk_counts_as_not_intact(h5file, pool):
    data = relu_rows(40)
    dataset = Recording(h5file.create_dataset("f", data=data, chunks=(4, 5), compression="gzip"), fail_read_at=3)
    blocks = iter_row_blocks(dataset, pool, lookahead=4)
    for row in (0, 4, 8):
        np.testing.assert_array_equal(next(blocks)[1], data[row : row + 4])
    with pytest.raises(OSError, match="fake bad sector"):
        next(blocks)
    dataset.direct_reads = 0
    assert intact_rows(dataset, 40, pool) == 12


def test_a_full_disk_at_a_chosen_chunk_reaches_the_caller(h5file, pool):
    rows = relu_rows(40)
    dataset = Recording(h5file.create_dataset("f", (40, 5), "f4", chunks=(4, 5), compression="gzip"), fail_write_at=3)
    writer = ChunkWriter(dataset, pool)
    with pytest.raises(OSError) as raised:
        writer.write(rows[:20])
        writer.flush()
    assert raised.value.errno == errno.ENOSPC
    assert writer.rows_written == 12  # the three chunks before the failing one, nothing after
    with pytest.raises(RuntimeError, match="failed earlier"):
        writer.write(rows[20:24])
    np.testing.assert_array_equal(dataset[:12], rows[:12])
    assert dataset.id.get_num_chunks() == 3


def test_a_compression_error_on_a_pool_thread_reaches_the_caller(h5file):
    class FailingPool(CodecPool):
        def submit(self, function, *args):
            return super().submit(_raise_memory_error)

    dataset = h5file.create_dataset("f", (40, 5), "f4", chunks=(4, 5), compression="gzip")
    with FailingPool(2) as pool, pytest.raises(MemoryError):
        with ChunkWriter(dataset, pool) as writer:
            writer.write(relu_rows(40))
    assert dataset.id.get_num_chunks() == 0


def _raise_memory_error():
    raise MemoryError("no room to compress")


@pytest.mark.parametrize("layout", PLAIN_LAYOUTS)
def test_layouts_it_cannot_decode_go_through_plain_h5py(h5file, pool, layout, caplog):
    rows = relu_rows(30)
    dataset = h5file.create_dataset("f", (30, 5), "f4", **PLAIN_LAYOUTS[layout])
    caplog.set_level(logging.DEBUG, logger="storage.chunkio")
    with ChunkWriter(dataset, pool) as writer:
        write_in_blocks(writer, rows, sizes=[8, 8, 14])
    np.testing.assert_allclose(dataset[...], rows, atol=1e-3)  # scaleoffset keeps 3 decimals
    np.testing.assert_array_equal(read_rows(dataset, pool, 2, 29), dataset[2:29])
    assert intact_rows(dataset, 30, pool) == 30
    assert "plain h5py I/O" in caplog.text and "direct chunk" not in caplog.text


def test_a_chunk_never_written_is_told_apart_from_fill_values(h5file, pool):
    rows = relu_rows(24)
    dataset = h5file.create_dataset("f", (24, 5), "f4", chunks=(8, 5), compression="gzip")
    dataset[0:8] = rows[0:8]
    dataset[16:24] = rows[16:24]
    blocks = iter_row_blocks(dataset, pool)
    np.testing.assert_array_equal(next(blocks)[1], rows[0:8])
    with pytest.raises(MissingChunkError, match="rows 8:16 were never written"):
        next(blocks)
    np.testing.assert_array_equal(read_rows(dataset, pool, missing="fill"), dataset[...])


def test_intact_rows_counts_the_chunks_that_read_back(tmp_path, pool):
    path = tmp_path / "f.h5"
    rows = relu_rows(40)
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("f", (40, 5), "f4", chunks=(8, 5), compression="gzip")
        write_array(dataset, rows[:24], pool)
        assert intact_rows(dataset, 24, pool) == 24
        assert intact_rows(dataset, 20, pool) == 20  # a claim inside a chunk that is there
        assert intact_rows(dataset, 40, pool) == 24  # a claimed tail that was never written
        assert intact_rows(dataset, 10**6, pool) == 24
        middle = dataset.id.get_chunk_info_by_coord((8, 0))
    with open(path, "r+b") as raw:  # tear the middle chunk: its deflate stream ends early
        raw.seek(middle.byte_offset + middle.size // 2)
        raw.write(b"\0" * (middle.size - middle.size // 2))
    with h5py.File(path, "r") as file:
        assert intact_rows(file["f"], 24, pool) == 8
        with pytest.raises(CorruptChunkError, match="rows 8:16"):
            read_rows(file["f"], pool)


def test_a_truncated_or_foreign_chunk_is_not_intact(h5file, pool):
    dataset = h5file.create_dataset("f", (16, 5), "f4", chunks=(8, 5), compression="gzip")
    whole = zlib.compress(relu_rows(8).tobytes(), 1)
    dataset.id.write_direct_chunk((0, 0), whole[:-4])  # adler32 missing
    dataset.id.write_direct_chunk((8, 0), zlib.compress(relu_rows(4).tobytes()))  # half a chunk's bytes
    assert intact_rows(dataset, 16, pool) == 0
    dataset.id.write_direct_chunk((0, 0), whole)
    assert intact_rows(dataset, 16, pool) == 8


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d, p: ChunkWriter(d, p, start=5), "start must be a multiple of the 8 rows per chunk"),
        (lambda d, p: ChunkWriter(d, p).write(np.zeros((3, 5), np.float64)), "rows must be float32 of shape"),
        (lambda d, p: ChunkWriter(d, p).write(np.zeros((3, 4), np.float32)), r"got float32 of shape \(3, 4\)"),
        (lambda d, p: ChunkWriter(d, p, start=16).write(np.zeros((9, 5), np.float32)), "go past the 24 rows"),
        (lambda d, p: write_array(d, np.zeros((4, 5), np.float32), p), "end inside a chunk"),
        (lambda d, p: read_rows(d, p, 10, 30), "not within the dataset's 24 rows"),
        (lambda d, p: iter_row_blocks(d, p, 10, 30), "not within the dataset's 24 rows"),  # before the first block
        (lambda d, p: iter_row_blocks(d, p, lookahead=0), "must be None or >= 1"),
        (lambda d, p: read_rows(d, p, missing="zeros"), "missing must be"),
        (lambda d, p: intact_rows(d, -1, p), "claimed_rows must be >= 0"),
        (lambda d, p: CodecPool(-1), "threads must be None or an integer"),
    ],
)
def test_wrong_usage_says_what_was_expected(h5file, call, message):
    dataset = h5file.create_dataset("f", (24, 5), "f4", chunks=(8, 5), compression="gzip")
    with CodecPool(0) as pool, pytest.raises(ValueError, match=message):
        call(dataset, pool)


@pytest.mark.parametrize("threads", [0, 1])
def test_zero_or_one_thread_runs_inline(threads):
    with CodecPool(threads) as pool:
        assert pool.submit(threading.get_ident).result() == threading.get_ident()


def test_the_default_thread_count_is_the_machines_within_reason():
    with CodecPool() as pool:
        assert 1 <= pool.threads <= chunkio.MAX_DEFAULT_THREADS
        assert pool.threads == min(chunkio.MAX_DEFAULT_THREADS, len(os.sched_getaffinity(0)))


# --- Stress, kill -9 and full disk: each runs in a child process, so a crash is a failure, not the end of pytest.


def run_child(function, *args, timeout=120):
    """Run ``function(*args)`` of this module in a fresh Python; its CompletedProcess."""
    code = f"import tests.test_chunkio as t; t.{function}(*{args!r})"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def write_features(path, rows, pool, block_sizes, *, shuffle=False, stop_at=None):
    """Write ``rows`` as featpipe's feature writer does: a block, flush, raise ``rows_written``, flush.

    Also writes a plain (HDF5-cached) dataset into the same file, and leaves
    the dataset in a reference cycle so that whichever thread runs the garbage
    collector frees it. Stops (file closed, unfinished chunk dropped) after
    ``stop_at`` rows if given, like a run interrupted and resumed later.
    """
    with h5py.File(path, "w") as file:
        group = file.create_group("train")
        dataset = group.create_dataset("features", rows.shape, "f4", chunks=(8, rows.shape[1]), compression="gzip", shuffle=shuffle)
        group.create_dataset("labels", (len(rows),), "i8")
        group.attrs["rows_written"] = 0
        cycle = [dataset]
        cycle.append(cycle)
        with ChunkWriter(dataset, pool) as writer:
            append_blocks(file, writer, rows, block_sizes, stop_at)
            group["labels"][: len(rows) // 2] = np.arange(len(rows) // 2)


def append_blocks(file, writer, rows, block_sizes, stop_at=None, pause=None):
    """Append as featpipe's writer does: a block, flush, raise ``rows_written``, flush; ``pause()`` between blocks."""
    start, turn = writer.rows_taken, 0
    while start < (stop_at or len(rows)):
        end = min(len(rows), start + block_sizes[turn % len(block_sizes)])
        writer.write(rows[start:end])
        file.flush()  # the chunks handed over are on disk before they are claimed
        file["train"].attrs["rows_written"] = writer.rows_written
        file.flush()
        start, turn = end, turn + 1
        if pause:
            pause()


def resume_features(path, rows, pool):
    """Finish a partial feature file: trust only the rows :func:`intact_rows` confirms. Returns the row resumed from."""
    try:
        file = h5py.File(path, "a")
    except OSError:  # killed before its first flush: unreadable, start again
        write_features(path, rows, pool, [50])
        return 0
    with file:
        dataset = file["train/features"]
        start = intact_rows(dataset, int(file["train"].attrs["rows_written"]), pool)
        with ChunkWriter(dataset, pool, start=start) as writer:
            append_blocks(file, writer, rows, [50])
    return start


def stress_child(directory, iterations):
    """Extract's two threads on two files, many times: image rows read on one, feature files written on the other."""
    directory = Path(directory)
    images = np.random.default_rng(0).integers(0, 256, size=(96, 8, 8, 3), dtype=np.uint8)
    with h5py.File(directory / "images.h5", "w") as store:
        store.create_dataset("images", data=images, chunks=(8, 8, 8, 3), compression="gzip", compression_opts=1)
    stop, failures, reads = threading.Event(), [], [0]

    def read_images():
        rng = np.random.default_rng(1)
        try:
            with h5py.File(directory / "images.h5", "r") as store, CodecPool(2) as pool:
                while not stop.is_set():
                    start = int(rng.integers(0, 80))
                    if not np.array_equal(read_rows(store["images"], pool, start, start + 16), images[start : start + 16]):
                        failures.append(f"image rows {start}:{start + 16} differ")
                    reads[0] += 1
        except BaseException as error:
            failures.append(f"reader: {error!r}")

    def collect_garbage():  # frees h5py objects of both files from a third thread
        while not stop.is_set():
            gc.collect(0)  # the young cycles, where the datasets left behind are
            time.sleep(0.001)

    helpers = [threading.Thread(target=read_images), threading.Thread(target=collect_garbage)]
    for thread in helpers:
        thread.start()
    rng = np.random.default_rng(2)
    try:
        with CodecPool(2) as pool:
            for iteration in range(iterations):
                rows = relu_rows(100, dim=16, seed=iteration)
                path = directory / f"features{iteration % 2}.h5"
                sizes = [int(size) for size in rng.integers(1, 30, size=5)]
                stop_at = int(rng.integers(1, 100)) if iteration % 3 == 0 else None
                write_features(path, rows, pool, sizes, shuffle=bool(iteration % 2), stop_at=stop_at)
                if stop_at:
                    resume_features(path, rows, pool)
                with h5py.File(path, "r") as file:
                    if not np.array_equal(file["train/features"][...], rows):
                        failures.append(f"iteration {iteration}: features differ")
    finally:
        stop.set()
        for thread in helpers:
            thread.join()
    print(f"{iterations} files written, {reads[0]} image reads, failures: {failures}")
    sys.exit(1 if failures else 0)


@pytest.mark.slow
def test_parallel_write_and_read_on_two_threads_never_fail(tmp_path):
    child = run_child("stress_child", str(tmp_path), 200)
    assert child.returncode == 0, f"rc={child.returncode}\n{child.stdout}\n{child.stderr[-3000:]}"
    assert "200 files written" in child.stdout and "Exception ignored" not in child.stderr


def kill_child(path, rows_and_dim):
    """Write a feature file, killable in the middle: "ready" once the file exists.

    Random pauses between appends (as a forward pass makes) put some kills
    between HDF5 calls, where the claims must be right, and others inside them.
    """
    rows = relu_rows(*rows_and_dim)
    rng = np.random.default_rng(int(Path(path).stem[-1]))
    with CodecPool(2) as pool:
        with h5py.File(path, "w") as file:
            group = file.create_group("train")
            dataset = group.create_dataset("features", rows.shape, "f4", chunks=(8, rows.shape[1]), compression="gzip")
            group.attrs["rows_written"] = 0
            file.flush()
            print("ready", flush=True)
            with ChunkWriter(dataset, pool) as writer:
                append_blocks(file, writer, rows, [20, 7, 50], pause=lambda: time.sleep(rng.uniform(0, 0.004)))
                print("appended", flush=True)  # a kill after this line came too late to test a resume


@pytest.mark.slow
def test_kill_9_mid_write_then_resume_equals_an_uninterrupted_write(tmp_path):
    total = 3000
    rows = relu_rows(total, dim=256)
    uninterrupted = tmp_path / "whole.h5"
    with CodecPool(2) as pool:
        write_features(uninterrupted, rows, pool, [50])
    with h5py.File(uninterrupted, "r") as file:
        expected = file["train/features"][...]
    rng = np.random.default_rng(3)
    # The appends take ~0.4 s here but less on a faster machine, where a kill
    # can arrive after the last row; each such miss halves the window, so that
    # some kill lands mid-write instead of the test passing on finished files.
    window, kills = 0.6, []
    for attempt in range(12):
        path = tmp_path / f"killed{attempt}.h5"
        child = subprocess.Popen(
            [sys.executable, "-c", f"import tests.test_chunkio as t; t.kill_child({str(path)!r}, ({total}, 256))"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, window))
        child.send_signal(signal.SIGKILL)
        child.wait()
        # Not the resumed row alone: a finished child's last claim can trail its last row.
        appended_all = "appended" in child.stdout.read()
        child.stdout.close()
        with CodecPool(2) as pool:
            resumed_from = resume_features(path, rows, pool)
        with h5py.File(path, "r") as file:
            np.testing.assert_array_equal(file["train/features"][...], expected)
        kills.append((round(window, 3), appended_all, resumed_from))
        if appended_all:
            window /= 2
        mid_write = [start for _, finished, start in kills if not finished and start > 0]
        if attempt >= 4 and mid_write:
            break
    assert mid_write, f"no kill landed mid-write in {len(kills)} attempts; (window s, all rows appended, resumed from row): {kills}"


def full_disk_child(path):
    """Write until the disk is full; print where it stopped. The exit code says whether the interpreter survived."""
    rows = relu_rows(600, dim=1024)
    file = h5py.File(path, "w")
    try:
        group = file.create_group("train")
        dataset = group.create_dataset("features", rows.shape, "f4", chunks=(8, 1024), compression="gzip")
        group.attrs["rows_written"] = 0
        file.flush()
        with CodecPool(2) as pool, ChunkWriter(dataset, pool) as writer:
            append_blocks(file, writer, rows, [40])
    except OSError as error:
        print(f"errno={error.errno} claimed={int(file['train'].attrs['rows_written'])}", flush=True)
    finally:
        file.close()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (root only; skipped where mounting isn't permitted)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip() or mounted.returncode}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_stops_the_writer_cleanly_and_the_file_resumes_after_space_is_freed(tiny_disk):
    path = tiny_disk / "f.h5.partial"
    child = run_child("full_disk_child", str(path))
    assert child.returncode == 0, f"rc={child.returncode} (139: segfault)\n{child.stderr[-3000:]}"
    assert f"errno={errno.ENOSPC}" in child.stdout and "Exception ignored" not in child.stderr
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_disk)], check=True)
    rows = relu_rows(600, dim=1024)
    with CodecPool(2) as pool:
        resumed_from = resume_features(path, rows, pool)
    with h5py.File(path, "r") as file:
        np.testing.assert_array_equal(file["train/features"][...], rows)
    assert 0 < resumed_from < 600
