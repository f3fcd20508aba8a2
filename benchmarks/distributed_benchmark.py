"""What does the Dask path cost against plain `extract`, and what limits it as workers grow?

On the same synthetic images, this measures and prints:

1. plain ``extract_features`` in a fresh process (the single-machine path);
2. ``extract_distributed`` on a local cluster of 1 worker x N threads (N = the
   cores here): the Dask overhead alone;
3. ``extract_distributed`` on N workers x 1 thread: the same cores as
   processes;

images per second of each and the ratios to (1), and the CPU seconds all
its processes spent per 1000 images. Each is timed on its second, warm
extraction; the first pays the model build, the warm-up batch that traces
the forward pass and, for Dask, the cluster's start (the "set-up" column).
Rounds interleave the three so that load from elsewhere hits them alike, and
the best round counts. Then the things that bound scaling whatever the
number of workers: how fast the client joins parts into the feature file
(per 1000 rows, at 1280 and 4096 floats per row), how fast a worker writes a
part, and how fast the image store is read.

Weights default to ``none``: speed doesn't depend on the values, and this
runs offline.

Usage::

    python benchmarks/distributed_benchmark.py                    # mobilenet_v2, 768 images
    python benchmarks/distributed_benchmark.py --images 2048 --shard-size 256 --backbone resnet50
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import join_writer, relu_like_rows, report_result, run_measurement  # noqa: E402

TARGET = "target: (2) distributed, one worker, >= 0.90 x (1) plain"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2")
    parser.add_argument("--images", type=int, default=768, help="images in the store (all in train)")
    parser.add_argument("--image-size", type=int, default=32, help="stored images are SIZE x SIZE x 3 (CIFAR-10: 32)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, default=128)
    parser.add_argument("--weights", default="none")
    parser.add_argument("--cores", type=int, default=os.cpu_count(), help="cores to share out among workers")
    parser.add_argument("--rounds", type=int, default=2, help="times each run is repeated (interleaved); the best counts")
    parser.add_argument("--workdir", default=None, help="where the store and outputs go (default: a temporary folder)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return plain_child(args)
    with tempfile.TemporaryDirectory(prefix="featpipe-dask-bench-") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        store = make_store(workdir / "images.h5", args)
        runs = {"plain": [], "one": [], "many": []}
        # Rounds interleave the three, so a burst of load from elsewhere hits them alike.
        for round_ in range(args.rounds):
            for name in runs:
                (workdir / f"{name}.h5").unlink(missing_ok=True)
            runs["plain"].append(measure_plain(args, store, workdir))
            runs["one"].append(measure_distributed(args, store, workdir / "one.h5", workers=1, threads=args.cores))
            runs["many"].append(measure_distributed(args, store, workdir / "many.h5", workers=args.cores, threads=1))
        limits = measure_limits(store, workdir)
        equal = same_features(workdir / "plain.h5", workdir / "one.h5") and same_features(workdir / "plain.h5", workdir / "many.h5")
    print(format_report(args, runs, limits, equal))
    return 0


def make_store(path, args):
    from storage.image_store import ImageSplit, write_image_store

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.images, args.image_size, args.image_size, 3), dtype=np.uint8)
    labels = np.arange(args.images) % 10
    splits = {
        "train": ImageSplit(images, labels, [f"bench:{i}" for i in range(args.images)]),
        "test": ImageSplit(images[:0], labels[:0], []),
    }
    write_image_store(path, splits, source="benchmark", class_names=[str(i) for i in range(10)], seed=0)
    return path


def extractor(args):
    from features.engine import FeatureExtractor

    return FeatureExtractor(args.backbone, weights=args.weights, batch_size=args.batch_size, seed=0)


# --- (1) plain, in a fresh process ------------------------------------------------------------


def measure_plain(args, store, workdir):
    command = [sys.executable, __file__, "--child", "--store", str(store), "--workdir", str(workdir),
               "--backbone", args.backbone, "--batch-size", str(args.batch_size), "--weights", args.weights]
    result = run_measurement(command, "plain extraction")
    _note("plain", result)
    return result


def plain_child(args):
    """Fit and warm up (as each Dask worker does), then time ``extract_features`` twice; the second run counts."""
    from features.engine import extract_features
    from storage.image_store import ImageStore

    started = time.perf_counter()
    fitted = extractor(args).fit()
    with ImageStore(args.store) as store:
        fitted.transform(np.zeros((1,) + store.image_shape(), np.uint8))
    out = Path(args.workdir) / "plain.h5"
    first = extract_features(args.store, out, fitted, progress=False)
    wall = time.perf_counter() - started
    setup = wall - first["seconds"]
    out.unlink()
    cpu = time.process_time()
    summary = extract_features(args.store, out, fitted, progress=False)
    result = {"label": "(1) plain extract_features", "images_per_second": summary["images_per_second"],
              "setup_seconds": setup, "seconds": summary["seconds"], "wall_seconds": wall,
              "cpu_seconds": time.process_time() - cpu, "images": summary["rows_computed"]}
    report_result(result)
    return 0


# --- (2) and (3) on local Dask clusters --------------------------------------------------------


def measure_distributed(args, store, out, workers, threads):
    """Extract on a fresh local cluster (cold: starts, loads the backbone), then again (warm); the second counts."""
    from plumbing.cluster import dask_client
    from features.distributed import extract_distributed

    started = time.perf_counter()
    with dask_client(workers=workers, threads_per_worker=threads) as client:
        address = client.scheduler.address
        first = extract_distributed(store, out, extractor(args), scheduler=address, shard_size=args.shard_size, progress=False)
        wall = time.perf_counter() - started
        out.unlink()
        cpu = cluster_cpu_seconds(client)
        summary = extract_distributed(store, out, extractor(args), scheduler=address, shard_size=args.shard_size, progress=False)
        cpu = cluster_cpu_seconds(client) - cpu
    result = {
        "label": f"({2 if workers == 1 else 3}) Dask, {workers} worker(s) x {threads} thread(s)",
        "images_per_second": summary["images_per_second"],
        # Cluster start, worker imports, model builds and warm-up, as the cold run paid them.
        "setup_seconds": wall - first["seconds"],
        "seconds": summary["seconds"],
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "images": summary["rows_computed"],
    }
    _note(result["label"], result)
    return result


def cluster_cpu_seconds(client):
    """CPU time of every worker process plus this one (client, scheduler and join)."""
    return sum(client.run(time.process_time).values()) + time.process_time()


def same_features(path, other):
    from storage.feature_store import load_features

    return bool(np.allclose(load_features(path, "train").features, load_features(other, "train").features, rtol=1e-5, atol=1e-5))


# --- what bounds scaling: the join, part writes, store reads -----------------------------------


def measure_limits(store, workdir):
    return {
        "join_ms_per_1000_rows": {dim: time_join(workdir / f"join-{dim}.h5", dim) for dim in (1280, 4096)},
        "part_write_ms_per_1000_rows": {dim: time_part_write(workdir, dim) for dim in (1280, 4096)},
        "store_read_images_per_second": time_store_read(store),
    }


def time_join(out, dim, rows=4096, shard_size=1024):
    """Milliseconds per 1000 rows for the client to write parts (compressed by the workers) into the feature file."""
    from plumbing.atomic import write_bytes_atomically
    from storage.chunkio import CodecPool
    from features.distributed import PartFolder, ShardJoin, part_bytes, parts_folder, plan_shards

    attrs, writer = join_writer(out, dim, rows)
    with writer:
        layout = writer.layout("train")
        parts = PartFolder(parts_folder(out), attrs, {"train": layout})
        shards = plan_shards({"train": rows, "test": 0}, {"train": shard_size, "test": shard_size})
        with CodecPool() as pool:
            for shard in shards:
                rows_ = relu_like_rows(shard.stop - shard.start, dim, shard.start)
                write_bytes_atomically(parts.part(shard), part_bytes(rows_, layout, pool))
        join = ShardJoin(writer, shards, parts)
        started = time.perf_counter()
        for shard in shards:
            join.finished(shard)
        writer.finish()
        seconds = time.perf_counter() - started
    parts.remove()
    return 1000 * seconds / rows * 1000


def time_part_write(workdir, dim, rows=1024):
    """Milliseconds per 1000 rows for a worker to compress a shard into chunks and write its part."""
    from plumbing.atomic import write_bytes_atomically
    from storage.chunkio import CodecPool
    from features.distributed import part_bytes

    _, writer = join_writer(workdir / f"layout-{dim}.h5", dim, rows)
    with writer:
        layout = writer.layout("train")
    values = relu_like_rows(rows, dim)
    started = time.perf_counter()
    with CodecPool() as pool:
        write_bytes_atomically(workdir / f"part-{dim}.chunks.npz", part_bytes(values, layout, pool))
    return 1000 * (time.perf_counter() - started) / rows * 1000


def time_store_read(store, batch_size=32):
    from storage.chunkio import CodecPool
    from storage.image_store import ImageStore
    from storage.streaming import iter_image_batches

    with ImageStore(store) as images, CodecPool() as pool:
        started = time.perf_counter()
        count = sum(len(batch) for _, batch in iter_image_batches(images, "train", 0, None, batch_size, pool=pool))
        return count / (time.perf_counter() - started)


# --- the report ------------------------------------------------------------------------------


def _note(what, result):
    print(f"  {what}: {result['images_per_second']} images/s, set-up {result['setup_seconds']:.1f} s", file=sys.stderr, flush=True)


def format_report(args, runs, limits, equal):
    best = {name: max(results, key=lambda result: result["images_per_second"]) for name, results in runs.items()}
    plain = best["plain"]
    lines = [
        f"featpipe distributed extraction benchmark: {args.backbone}, weights {args.weights}, batch {args.batch_size}, "
        f"{args.images} images {args.image_size}x{args.image_size}x3, shards of {args.shard_size}, "
        f"{args.cores} cores ({os.cpu_count()} CPUs here, load average at the end: {os.getloadavg()[0]:.2f})",
        f"best of {args.rounds} interleaved rounds, each timing a second, warm extraction; every round's images/s in brackets",
        "CPU s per 1000 images: all processes of the run (for Dask: workers, client, scheduler, join), steadier than images/s on a shared machine",
        "",
        "| run | images/s | x plain | CPU s per 1000 images | extraction, s | set-up, s | cold wall, s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in best.items():
        each = ", ".join(f"{other['images_per_second']:.1f}" for other in runs[name])
        lines.append(
            f"| {result['label']} | {result['images_per_second']:.1f} [{each}] | "
            f"{result['images_per_second'] / plain['images_per_second']:.2f} | "
            f"{1000 * result['cpu_seconds'] / result['images']:.1f} | {result['seconds']:.1f} | "
            f"{result['setup_seconds']:.1f} | {result['wall_seconds']:.1f} |"
        )
    join, write = limits["join_ms_per_1000_rows"], limits["part_write_ms_per_1000_rows"]
    lines += [
        "",
        f"features equal to (1) in both Dask runs: {'yes' if equal else 'NO'}",
        "join on the client (write the parts' compressed chunks into the HDF5 file), per 1000 rows: "
        + ", ".join(f"{ms:.0f} ms at {dim} floats" for dim, ms in join.items()),
        "part write on a worker (compress into chunks, fsync, rename), per 1000 rows: " + ", ".join(f"{ms:.0f} ms at {dim} floats" for dim, ms in write.items()),
        f"image store read ({args.image_size}x{args.image_size}x3, gzip chunks): {limits['store_read_images_per_second']:.0f} images/s",
        "",
        TARGET,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
