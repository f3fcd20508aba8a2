"""Streaming I/O: batches read ahead by a thread, rows written behind by another, errors where they belong."""

import threading

import numpy as np
import pytest

from storage.chunkio import CodecPool
from storage.streaming import RowSink, iter_image_batches

INLINE = CodecPool(1)


class FakeStore:
    """An image store of ``n`` one-pixel rows whose value is the row number (mod 256), in chunks of ``chunk`` rows."""

    def __init__(self, n, chunk=100, fail_at=None):
        self.n, self.chunk, self.fail_at, self.reads = n, chunk, fail_at, []

    def num_rows(self, split):
        return self.n

    def iter_images(self, split, start, stop, pool):
        row = start
        while row < stop:
            end = min(stop, (row // self.chunk + 1) * self.chunk)
            self.reads.append((row, end))
            if self.fail_at is not None and row <= self.fail_at < end:
                raise OSError("disk gone")
            yield row, (np.arange(row, end) % 256).astype(np.uint8).reshape(-1, 1, 1, 1)
            row = end


def test_image_batches_come_in_order_from_a_reader_thread_across_chunks():
    store = FakeStore(300, chunk=100)
    threads = set()

    def stage(images):
        threads.add(threading.current_thread().name)
        return images

    batches = list(iter_image_batches(store, "train", start=5, batch_size=64, pool=INLINE, stage=stage))
    assert [row for row, _ in batches] == [5, 69, 133, 197, 261]
    assert [len(images) for _, images in batches] == [64, 64, 64, 64, 39]
    assert np.concatenate([images for _, images in batches]).ravel().tolist() == [row % 256 for row in range(5, 300)]
    assert store.reads == [(5, 100), (100, 200), (200, 300)]  # each chunk read once
    assert threads == {"featpipe-reader-train"}  # staging (the copy to the device) runs on the reader


def test_a_read_error_reaches_the_consumer_and_the_reader_stops():
    # The threads alive before; a count would also drop when some other test's thread ends meanwhile.
    before = set(threading.enumerate())
    with pytest.raises(OSError, match="disk gone"):
        list(iter_image_batches(FakeStore(600, fail_at=300), "train", batch_size=32, pool=INLINE))
    batches = iter_image_batches(FakeStore(10_000), "train", batch_size=8, prefetch=2, pool=INLINE)
    next(batches)
    batches.close()  # a consumer that leaves early must not strand the reader
    assert not set(threading.enumerate()) - before, "a reader thread outlived its consumer"


class ListWriter:
    """The part of FeatureWriter that RowSink uses, keeping appends in a list."""

    def __init__(self, fail=False, slow=None):
        self.appended, self.fail, self.slow = [], fail, slow

    def append(self, split, rows):
        if self.slow is not None:
            self.slow.wait()
        if self.fail:
            raise OSError(28, "No space left on device")
        self.appended.append((split, rows.tolist()))


def test_row_sink_writes_every_row_in_order_and_joins_what_waits():
    release = threading.Event()
    writer = ListWriter(slow=release)
    sink = RowSink(writer, depth=8)
    for start in range(0, 10, 3):  # batches of 3 rows: 0-2, 3-5, 6-8, 9
        sink.put("train", np.arange(start, min(start + 3, 10)))
    sink.put("test", np.arange(2))
    release.set()
    sink.close()
    assert sum((rows for split, rows in writer.appended if split == "train"), []) == list(range(10))
    assert [split for split, _ in writer.appended][-1] == "test"
    assert len(writer.appended) < 5  # the batches that waited for a slow writer went in together


def test_row_sink_reports_write_errors_in_the_callers_thread():
    failing = RowSink(ListWriter(fail=True), depth=1)
    with pytest.raises(OSError, match="No space left"):
        for i in range(100):
            failing.put("train", np.array([i]))
        failing.close()
