"""Where reading and writing are the work: extract and the Dask join against one-thread h5py.

In one run, on the same synthetic data, this measures and prints, each way in
a fresh process, fastest of ``--rounds`` interleaved rounds:

1. **write-bound extract**: a store of 28x28x1 images through a cheap user
   model whose output is 4,096 floats (so compressing features is most of
   the work), against a plain one-thread h5py write of the same features
   (gzip level 1, chunks of a MiB, 256-row appends);
2. **read-bound extract**: a store of 224x224x3 photo-like images through a
   cheap user model with 64 outputs (so decompressing images is most of the
   work), against a plain one-thread h5py read of that store (256-row reads);
3. **the Dask client's join** at 4,096 floats per row: parts already
   compressed by the workers written into the feature file, against the
   join before (load uncompressed parts, append them through h5py's gzip);
4. **prepare on a folder of JPEG photos**: decoding and resizing in one
   process per core against one process.

Ratios are against the baseline measured in the same run.

Usage::

    python benchmarks/io_benchmark.py
    python benchmarks/io_benchmark.py --rows 8192 --photos 1024 --rounds 3 --json io.json
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import join_writer, plain_features_dataset, relu_like_rows, report_result, run_measurement  # noqa: E402

TARGETS = "targets (2 cores): 1 and 2 >= 1.5x their one-thread h5py baseline; 3 >= 3x the join before"
CASES = {  # case: (featpipe's way, the baseline)
    "write-bound extract": ("extract_wide", "plain_write"),
    "read-bound extract": ("extract_photos", "plain_read"),
    "Dask join, 4096 floats": ("join_encoded", "join_before"),
    "prepare, JPEG folder": ("prepare_parallel", "prepare_serial"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4096, help="images of the write-bound store, rows of the join")
    parser.add_argument("--photos", type=int, default=512, help="images of the 224x224x3 store and JPEGs of the folder")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--io-threads", type=int, default=None, help="featpipe's codec threads (default: one per core)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    with tempfile.TemporaryDirectory(prefix="featpipe-io-bench-") as scratch:
        args.workdir = str(Path(args.workdir or scratch))
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
        make_inputs(args)
        ways = [way for pair in CASES.values() for way in pair]
        runs = {way: [] for way in ways}
        for _ in range(args.rounds):
            for way in ways:
                runs[way].append(child(args, way))
    best = {way: max(results, key=lambda result: result["per_second"]) for way, results in runs.items()}
    print(format_report(args, best))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": best}, indent=2))
    return 0


def format_report(args, best):
    lines = [
        f"featpipe I/O benchmark: {os.cpu_count()} CPUs, codec threads {args.io_threads or 'default'}, "
        f"fastest of {args.rounds} interleaved rounds",
        "",
        "| case | featpipe | baseline | unit | ratio |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for case, (ours, theirs) in CASES.items():
        lines.append(f"| {case} | {best[ours]['per_second']:.0f} | {best[theirs]['per_second']:.0f} | "
                     f"{best[ours]['unit']} | {best[ours]['per_second'] / best[theirs]['per_second']:.2f} |")
    return "\n".join(lines + ["", TARGETS])


def child(args, way):
    command = [sys.executable, __file__, "--child", way, "--rows", str(args.rows), "--photos", str(args.photos),
               "--workdir", args.workdir] + (["--io-threads", str(args.io_threads)] if args.io_threads else [])
    result = run_measurement(command, way)
    print(f"  {way:<18} {result['per_second']:.0f} {result['unit']}", file=sys.stderr, flush=True)
    return result


# --- inputs, made once -------------------------------------------------------------------------


def photo_like(count, size=224, seed=0):
    """Smooth uint8 RGB images (upscaled noise): gzip finds in them about what it finds in photos."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, size // 8, size // 8, 3), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)) for image in small])


def make_inputs(args):
    from plumbing.backend import load_keras
    from storage.image_store import ImageSplit, write_image_store

    work = Path(args.workdir)
    keras = load_keras()
    for name, images in (("wide", np.random.default_rng(0).integers(0, 256, (args.rows, 28, 28, 1), dtype=np.uint8)),
                         ("photos", photo_like(args.photos))):
        labels = np.arange(len(images)) % 10
        splits = {"train": ImageSplit(images, labels, [f"b:{i}" for i in range(len(images))]),
                  "test": ImageSplit(images[:0], labels[:0], [])}
        write_image_store(work / f"{name}.h5", splits, source="benchmark", class_names=[str(i) for i in range(10)], seed=0)
    for name, shape, width in (("wide", (28, 28, 1), 4096), ("photos", (224, 224, 3), 64)):
        inputs = keras.Input(shape)
        pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        keras.Model(inputs, keras.layers.Dense(width, activation="relu", name="out")(pooled)).save(work / f"{name}.keras")
    np.save(work / "features.npy", relu_like_rows(args.rows, 4096))
    folder = work / "jpegs"
    for index, image in enumerate(photo_like(args.photos, size=480, seed=1)):
        (folder / f"c{index % 2}").mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.fromarray(image).save(folder / f"c{index % 2}" / f"{index}.jpg", quality=90)


# --- the children: one measurement each ----------------------------------------------------------


def run_child(args):
    report_result(globals()[f"measure_{args.child}"](args, Path(args.workdir)))
    return 0


def _extract(args, work, name, batch_size):
    from features.engine import FeatureExtractor, extract_features

    from storage.image_store import ImageStore

    extractor = FeatureExtractor(str(work / f"{name}.keras"), layer="out", weights="imagenet", batch_size=batch_size).fit()
    with ImageStore(work / f"{name}.h5") as store:
        extractor.transform(store.images("train", 0, batch_size))  # trace and compile once, untimed
    out = work / f"extract-{name}.h5"
    started = time.perf_counter()
    summary = extract_features(work / f"{name}.h5", out, extractor, overwrite=True, progress=False, io_threads=args.io_threads)
    seconds = time.perf_counter() - started
    out.unlink()
    return {"per_second": summary["rows_computed"] / seconds, "unit": "images/s"}


def measure_extract_wide(args, work):
    return _extract(args, work, "wide", 256)


def measure_extract_photos(args, work):
    return _extract(args, work, "photos", 256)


def measure_plain_write(args, work):
    import h5py

    rows = np.load(work / "features.npy")
    out = work / "plain.h5"
    started = time.perf_counter()
    with h5py.File(out, "w") as file:
        dataset = plain_features_dataset(file, rows.shape)
        for start in range(0, len(rows), 256):
            dataset[start : start + 256] = rows[start : start + 256]
            file.flush()
    seconds = time.perf_counter() - started
    out.unlink()
    return {"per_second": len(rows) / seconds, "unit": "images/s"}


def measure_plain_read(args, work):
    import h5py

    started = time.perf_counter()
    with h5py.File(work / "photos.h5", "r") as file:
        images = file["train/images"]
        for start in range(0, len(images), 256):
            images[start : start + 256]
    return {"per_second": len(images) / (time.perf_counter() - started), "unit": "images/s"}


def measure_join_encoded(args, work):
    """The client's join now: shards compressed on the workers, their chunks written as they are."""
    from storage.chunkio import CodecPool
    from features.distributed import PartFolder, ShardJoin, part_bytes, parts_folder, plan_shards
    from plumbing.atomic import write_bytes_atomically

    rows = np.load(work / "features.npy")
    out = work / "joined.h5"
    attrs, writer = join_writer(out, rows.shape[1], len(rows))
    with writer:
        layout = writer.layout("train")
        parts = PartFolder(parts_folder(out), attrs, {"train": layout})
        shards = plan_shards({"train": len(rows), "test": 0}, {"train": 1024, "test": 1024})
        with CodecPool() as pool:  # the workers' part, untimed
            for shard in shards:
                write_bytes_atomically(parts.part(shard), part_bytes(rows[shard.start : shard.stop], layout, pool))
        join = ShardJoin(writer, shards, parts)
        started = time.perf_counter()
        for shard in shards:
            join.finished(shard)
        writer.finish()
        seconds = time.perf_counter() - started
    parts.remove()
    out.unlink()
    return {"per_second": len(rows) / seconds, "unit": "rows/s"}


def measure_join_before(args, work):
    """The join before: load each uncompressed part, append it through h5py's own gzip, flush."""
    import h5py

    rows = np.load(work / "features.npy")
    for start in range(0, len(rows), 1024):
        np.save(work / f"part-{start}.npy", rows[start : start + 1024])
    out = work / "before.h5"
    started = time.perf_counter()
    with h5py.File(out, "w") as file:
        dataset = plain_features_dataset(file, rows.shape)
        for start in range(0, len(rows), 1024):
            dataset[start : start + 1024] = np.load(work / f"part-{start}.npy")
            file.flush()
    seconds = time.perf_counter() - started
    out.unlink()
    return {"per_second": len(rows) / seconds, "unit": "rows/s"}


def _prepare(args, work, workers):
    from sources import prepare_dataset

    started = time.perf_counter()
    dataset = prepare_dataset("folder", work / "jpegs", image_size=224, test_fraction=0.2, workers=workers)
    count = sum(len(split.labels) for split in dataset.splits.values())
    return {"per_second": count / (time.perf_counter() - started), "unit": "images/s"}


def measure_prepare_parallel(args, work):
    return _prepare(args, work, None)


def measure_prepare_serial(args, work):
    return _prepare(args, work, 1)


if __name__ == "__main__":
    sys.exit(main())
