"""Distributed extraction: shards, parts, the join, and faults, on a LocalCluster of 2 processes.

Most tests use :class:`FakeExtractor`, a stand-in whose features are a
deterministic function of each image, so sharding and fault handling are
checked in seconds; one test runs the real FeatureExtractor.
"""

import hashlib
import os
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from features import distributed
from features.distributed import PartFolder, Shard, ShardJoin, extract_distributed, parts_folder, plan_shards
from features.engine import extract_features
from plumbing.atomic import partial_path, write_bytes_atomically
from plumbing.errors import FeatpipeError
from storage.chunkio import CodecPool
from storage.feature_store import FeatureWriter, load_features, read_metadata
from storage.image_store import SPLITS, ImageStore, write_image_store
from tests.conftest import CLASS_NAMES, make_splits

FAKE_DIM = 8


class FakeExtractor:
    """The FeatureExtractor interface with features computed from pixels, no Keras.

    ``delay`` slows each batch down (seconds); ``die_after`` makes the worker
    process whose fitted copy reaches its ``die_after``-th batch exit at
    once, but only the first time across the cluster (``marker`` records
    it); ``log_dir`` records the images of every batch computed.
    """

    def __init__(self, batch_size=2, delay=0.0, die_after=None, marker=None, log_dir=None):
        self.batch_size = batch_size
        self.delay = delay
        self.die_after = die_after
        self.marker = marker
        self.log_dir = log_dir

    def get_params(self, deep=True):
        return dict(vars(self))

    def fit(self, X=None, y=None):
        self.feature_dim_ = FAKE_DIM
        self.backbone_ = type("Backbone", (), {"name": "fake"})()
        self.layer_ = "stats"
        self.weights_label_ = "none"
        self.device_ = None
        self.calls_ = 0
        return self

    def stage(self, images):
        return images

    def transform(self, X):
        self.calls_ += 1
        if self.die_after and self.calls_ >= self.die_after and first_to_claim(self.marker):
            os._exit(1)
        time.sleep(self.delay)
        if self.log_dir:
            (Path(self.log_dir) / uuid.uuid4().hex).write_text("\n".join(image_digest(image) for image in X))
        flat = X.reshape(len(X), -1).astype(np.float32)
        return np.concatenate([flat[:, : FAKE_DIM - 1] / 255, flat.mean(axis=1, keepdims=True)], axis=1)

    def transform_batches(self, batches):
        for key, images in batches:
            yield key, self.transform(images)

    def file_attributes(self, image_store, splits=SPLITS):
        return {
            "backbone": "fake",
            "layer": "stats",
            "feature_dim": FAKE_DIM,
            "input_size": [16, 16],
            "preprocessing": "none",
            "weights": "none",
            "weights_sha256": "0" * 64,
            "precision": "float32",
            "image_store_fingerprint": image_store.fingerprint,
            "class_names": image_store.class_names,
            "splits": list(splits),
        }


def first_to_claim(marker):
    """Create ``marker``; true for exactly one caller across processes."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def image_digest(image):
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def computed_rows(log_dir, store_path):
    """``{(split, row)}`` of every image the extractors logged."""
    with ImageStore(store_path) as store:
        where = {image_digest(image): (name, row) for name in SPLITS for row, image in enumerate(store.images(name))}
    digests = [line for path in Path(log_dir).iterdir() for line in path.read_text().splitlines()]
    return [where[digest] for digest in digests if digest in where]


@pytest.fixture
def scheduler(dask_scheduler):
    """The test run's LocalCluster of 2 single-threaded worker processes (tests/conftest.py)."""
    return dask_scheduler


@pytest.fixture
def store(tmp_path):
    """24 + 10 images: several shards in each split, the last one short."""
    path = tmp_path / "images.h5"
    write_image_store(path, make_splits(n_train=24, n_test=10), source="tiny", class_names=CLASS_NAMES, seed=0)
    return path


def single_process(store, tmp_path, extractor):
    out = tmp_path / "single.h5"
    extract_features(store, out, extractor, progress=False)
    return out


def assert_same_features(path, reference, atol=0.0):
    for split in SPLITS:
        got, want = load_features(path, split), load_features(reference, split)
        assert got.ids == want.ids, f"{split}: ids differ"
        np.testing.assert_array_equal(got.labels, want.labels, err_msg=f"{split}: labels differ")
        np.testing.assert_allclose(got.features, want.features, rtol=1e-5, atol=atol, err_msg=f"{split}: features differ")


def wait_until_idle(address, timeout=10):
    """Cancelled tasks still run to their end on the workers; wait for them before looking at the parts."""
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        deadline = time.monotonic() + timeout
        while any(client.run(lambda dask_worker: len(dask_worker.state.tasks)).values()):
            assert time.monotonic() < deadline, "the workers are still busy"
            time.sleep(0.1)


# --- the pieces, without a cluster ---------------------------------------------------------


def test_shards_cover_every_row_once_on_fixed_boundaries():
    shards = plan_shards({"train": 10, "test": 3}, {"train": 4, "test": 2})
    assert shards == [Shard("train", 0, 4), Shard("train", 4, 8), Shard("train", 8, 10), Shard("test", 0, 2), Shard("test", 2, 3)]
    assert plan_shards({"train": 0, "test": 0}, {"train": 4, "test": 4}) == []
    # A shard holds whole chunks (the client writes them as they come), and whole batches
    # where that costs little: a short batch would be padded and cost a full one.
    assert distributed.shard_size_for(5, batch_size=4, rows_per_chunk=4) == 8
    assert distributed.shard_size_for(8, batch_size=4, rows_per_chunk=8) == 8
    assert distributed.shard_size_for(1000, batch_size=256, rows_per_chunk=64) == 1024
    assert distributed.shard_size_for(1000, batch_size=3, rows_per_chunk=128) == 1152  # lcm 384
    assert distributed.shard_size_for(100, batch_size=7, rows_per_chunk=128) == 128  # lcm 896: chunks win


def fake_attrs(store_path):
    with ImageStore(store_path) as store:
        return FakeExtractor().fit().file_attributes(store), {name: (store.labels(name), store.ids(name)) for name in SPLITS}


@pytest.fixture
def chunks_of_8_rows(monkeypatch):
    """Feature files of FAKE_DIM floats chunked by 8 rows, so that a split has several shards."""
    from storage import feature_store

    monkeypatch.setattr(feature_store, "CHUNK_BYTES", 8 * FAKE_DIM * 4)


@pytest.fixture
def chunks_of_4_rows(monkeypatch):
    """Feature files of FAKE_DIM floats chunked by 4 rows: shards of 4 rows (a shard holds whole chunks)."""
    from storage import feature_store

    monkeypatch.setattr(feature_store, "CHUNK_BYTES", 4 * FAKE_DIM * 4)


def chunked_part(rows, writer, split):
    return distributed.part_bytes(rows, writer.layout(split), CodecPool(1))


def test_parts_join_in_row_order_whatever_order_they_finish(store, tmp_path, chunks_of_8_rows):
    attrs, splits = fake_attrs(store)
    out = tmp_path / "out.h5"
    rows = {name: np.random.default_rng(0).random((len(splits[name][0]), FAKE_DIM), dtype=np.float32) for name in SPLITS}
    with FeatureWriter(out, attrs=attrs, splits=splits) as writer:
        parts = PartFolder(parts_folder(out), attrs, {name: writer.layout(name) for name in SPLITS})
        shards = plan_shards({name: len(rows[name]) for name in SPLITS}, {"train": 8, "test": 8})
        join = ShardJoin(writer, shards, parts)
        for shard in reversed(shards):
            write_bytes_atomically(parts.part(shard), chunked_part(rows[shard.split][shard.start : shard.stop], writer, shard.split))
            join.finished(shard)
            # Nothing joins before the first shard; then everything does, in order.
            expected = {"train": 24, "test": 10} if shard == shards[0] else {"train": 0, "test": 0}
            assert {name: writer.rows_done(name) for name in SPLITS} == expected
        writer.finish()
    for name in SPLITS:
        np.testing.assert_array_equal(load_features(out, name).features, rows[name])
    assert [path.name for path in parts.path.iterdir()] == ["identity.json"]


def test_parts_made_with_other_settings_are_discarded(store, tmp_path, chunks_of_8_rows):
    attrs, splits = fake_attrs(store)
    folder = tmp_path / "out.h5.parts"
    with FeatureWriter(tmp_path / "out.h5", attrs=attrs, splits=splits) as writer:
        layouts = {name: writer.layout(name) for name in SPLITS}
        parts = PartFolder(folder, attrs, layouts)
        shard = Shard("train", 0, 8)
        write_bytes_atomically(parts.part(shard), chunked_part(np.ones((8, FAKE_DIM), np.float32), writer, "train"))
    assert PartFolder(folder, attrs, layouts).load(shard) is not None
    assert PartFolder(folder, dict(attrs, weights_sha256="1" * 64), layouts).load(shard) is None
    assert not parts.part(shard).exists()


def test_a_malformed_part_is_not_taken(store, tmp_path, chunks_of_8_rows):
    attrs, splits = fake_attrs(store)
    with FeatureWriter(tmp_path / "out.h5", attrs=attrs, splits=splits) as writer:
        parts = PartFolder(tmp_path / "out.h5.parts", attrs, {name: writer.layout(name) for name in SPLITS})
        shard = Shard("train", 0, 16)
        # One chunk where the shard has two.
        write_bytes_atomically(parts.part(shard), chunked_part(np.ones((8, FAKE_DIM), np.float32), writer, "train"))
    assert parts.load(shard) is None
    parts.part(shard).write_bytes(b"PK garbage")
    assert parts.load(shard) is None


def test_shard_size_must_be_positive(store, tmp_path):
    with pytest.raises(FeatpipeError, match="shard_size: expected an integer >= 1, got 0"):
        extract_distributed(store, tmp_path / "out.h5", FakeExtractor(), workers=1, shard_size=0)


# --- on a cluster ------------------------------------------------------------------------


def test_distributed_equals_single_process(store, tmp_path, scheduler, chunks_of_4_rows):
    reference = single_process(store, tmp_path, FakeExtractor().fit())
    out = tmp_path / "features" / "fake-stats.h5"
    summary = extract_distributed(store, out, FakeExtractor(), scheduler=scheduler, shard_size=4, progress=False)
    assert_same_features(out, reference)
    assert read_metadata(out) == read_metadata(reference)
    assert summary["rows"] == {"train": 24, "test": 10} and summary["rows_computed"] == 34
    assert summary["shards"] == 9 and summary["shards_reused"] == 0 and summary["workers"] == 2
    assert not parts_folder(out).exists() and not partial_path(out).exists()
    # A second run finds the file complete and computes nothing.
    again = extract_distributed(store, out, FakeExtractor(), scheduler=scheduler, shard_size=4, progress=False)
    assert again["skipped_because_complete"] and again["rows_computed"] == 0


@pytest.mark.slow
def test_a_worker_killed_mid_run_changes_nothing(store, tmp_path, scheduler, chunks_of_4_rows):
    reference = single_process(store, tmp_path, FakeExtractor().fit())
    marker = tmp_path / "killed-one"
    dying = FakeExtractor(delay=0.05, die_after=4, marker=str(marker))
    out = tmp_path / "out.h5"
    summary = extract_distributed(store, out, dying, scheduler=scheduler, shard_size=2, progress=False)
    assert marker.exists(), "no worker was killed: the test proved nothing"
    assert_same_features(out, reference)
    assert summary["rows_computed"] == 34


@pytest.mark.slow
def test_a_restarted_client_reuses_finished_shards(store, tmp_path, scheduler, monkeypatch, chunks_of_4_rows):
    reference = single_process(store, tmp_path, FakeExtractor().fit())
    out = tmp_path / "out.h5"
    joined = []
    finished = ShardJoin.finished

    def interrupted_after_three(self, shard):
        if len(joined) == 3:
            raise KeyboardInterrupt
        joined.append(shard)
        finished(self, shard)

    monkeypatch.setattr(ShardJoin, "finished", interrupted_after_three)
    with pytest.raises(KeyboardInterrupt):
        extract_distributed(store, out, FakeExtractor(delay=0.05), scheduler=scheduler, shard_size=4, progress=False)
    monkeypatch.setattr(ShardJoin, "finished", finished)
    wait_until_idle(scheduler)
    with h5py.File(partial_path(out)) as partial:
        kept = {name: set(range(partial[name].attrs["rows_written"])) for name in SPLITS}
    for part in parts_folder(out).glob("*.chunks.npz"):
        name, start, stop, _ = part.name.split("-")
        kept[name] |= set(range(int(start), int(stop)))
    assert sum(map(len, kept.values())) >= 12, "fewer rows kept than the 3 shards joined"

    log_dir = tmp_path / "log"
    log_dir.mkdir()
    summary = extract_distributed(store, out, FakeExtractor(log_dir=str(log_dir)), scheduler=scheduler, shard_size=4, progress=False)
    computed = computed_rows(log_dir, store)
    assert len(computed) == len(set(computed)), "a row was computed twice"
    assert set(computed) == {(name, row) for name, n in (("train", 24), ("test", 10)) for row in range(n) if row not in kept[name]}
    assert summary["rows_computed"] == len(computed) and summary["shards_reused"] >= 3
    assert_same_features(out, reference)


def test_a_missing_store_is_said_before_any_cluster_starts(tmp_path):
    with pytest.raises(FeatpipeError, match="image store not found"):
        extract_distributed(tmp_path / "missing.h5", tmp_path / "out.h5", FakeExtractor(), scheduler="tcp://127.0.0.1:1")


@pytest.mark.slow
def test_real_extractor_distributed_equals_single_process(tiny_image_store, tmp_path, scheduler):
    from features.engine import FeatureExtractor

    def mobilenet():
        return FeatureExtractor("mobilenet_v2", weights="none", batch_size=4, seed=3)

    reference = single_process(tiny_image_store, tmp_path, mobilenet())
    out = tmp_path / "mobilenet_v2-avg_pool.h5"
    summary = extract_distributed(tiny_image_store, out, mobilenet(), scheduler=scheduler, shard_size=4, progress=False)
    assert summary["workers"] == 2 and summary["rows_computed"] == 18 and summary["random_weights"]
    # Random weights too: every worker builds the plain run's (weights_sha256 is in the metadata).
    assert read_metadata(out) == read_metadata(reference)
    assert_same_features(out, reference, atol=1e-5)


# --- the command line --------------------------------------------------------------------


def run_extract(args, capsys):
    """Run `featpipe extract ARGS` in this process; (exit code, stdout, stderr)."""
    from pipeline.cli import cli, run

    try:
        code = run(cli, ["extract", *args])
    except SystemExit as exited:
        code = exited.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_extract_with_an_unreachable_scheduler_fails_in_one_line(tiny_image_store, in_tmp_project, capsys, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setattr("plumbing.cluster.CONNECT_TIMEOUT_S", 0.5)
    address = f"tcp://127.0.0.1:{free_port()}"
    out = in_tmp_project / "out.h5"
    code, _, err = run_extract(
        ["--scheduler", address, "--backbone", "mobilenet_v2", "--weights", "none", "--images", str(tiny_image_store), "--out", str(out)],
        capsys,
    )
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("featpipe: error:")]
    assert errors == [
        f"featpipe: error: cannot reach the Dask scheduler at {address}: no answer within 0.5 s "
        "(is `dask scheduler` running there, and reachable from here?)"
    ]
    assert "Traceback" not in err
    assert list(in_tmp_project.iterdir()) == [in_tmp_project / "data"], "something was written"
