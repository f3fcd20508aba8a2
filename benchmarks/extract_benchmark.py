"""How close is `extract` to the compiled forward pass, and to the course material's way?

In one run, on the same synthetic images, this measures and prints:

1. the ceiling: the compiled forward pass alone (``predict_on_batch``) on
   tensors already resized and preprocessed, in memory, measured at each
   size over as many images as extract gets, right before it (so a machine
   that slows down over minutes slows both alike);
2. featpipe's ``extract_features``: image store in, feature file out;
3. the course material's way: load every image, resize them all into one
   array, ``preprocess_input``, ``model.predict``, ``np.save``;

images per second of each, the ratios 2/1 and 2/3, and the peak resident
memory of 2 and 3 at each dataset size; then a reduced precision (bfloat16
by default) against float32 on the same weights: speed ratio and per-row
cosine similarity of the features.

Each measurement runs in a fresh subprocess, so peak memory (``ru_maxrss``)
is its own and one measurement's caches don't help the next. Each way runs
``--rounds`` times, interleaved with the others, and its fastest run counts:
a shared machine's speed drifts by several percent over minutes, as much as
the differences measured here. Timings exclude building the model, loading
weights and one warm-up batch that traces and compiles the forward pass (the
same for every way; on a GPU the compilation alone can outlast a small run).
Weights default to ``none`` (random, seeded): speed doesn't depend on the
values, and this runs offline.

Usage::

    python benchmarks/extract_benchmark.py                       # VGG16 fc2, 500 and 2000 images
    python benchmarks/extract_benchmark.py --sizes 200 800 --batch-size 32
    # a GPU box, a Fashion-MNIST-like store (28x28x1), then a folder of photos (224x224x3):
    KERAS_BACKEND=jax python benchmarks/extract_benchmark.py --sizes 4000 16000 --batch-size 256 \
        --precision mixed_float16 --rounds 1 --compare none --breakdown --json gpu-28.json
    KERAS_BACKEND=jax python benchmarks/extract_benchmark.py --sizes 8000 --image-size 224 --channels 3 \
        --batch-size 256 --precision mixed_float16 --rounds 1 --compare none --breakdown --json gpu-224.json

``--breakdown`` adds each stage of extract timed alone (forward pass with
the resize, reader thread, writer thread), to show which one limits it;
``--json FILE`` writes every number of the run to FILE as well.
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

from benchmarks.common import report_result, run_measurement  # noqa: E402

TARGETS = "targets: 2/1 >= 0.95; 2/3 >= 1.2; peak RSS of 2 grows < 10% between sizes while 3 grows; bfloat16 >= 1.6x float32 on CPU; cosine >= 0.99"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="vgg16")
    parser.add_argument("--layer", default=None, help="default: the backbone's default (vgg16: fc2)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000], help="dataset sizes (images)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "mixed_float16"])
    parser.add_argument("--weights", default="none", help="none (default), imagenet or a weights file")
    parser.add_argument("--image-size", type=int, default=28, help="stored images are SIZE x SIZE (Fashion-MNIST: 28)")
    parser.add_argument("--channels", type=int, default=1, choices=[1, 3])
    parser.add_argument("--ceiling-batches", type=int, default=0,
                        help="timed batches for the ceiling (default: as many as the size has images)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="times each way runs, interleaved; the fastest counts (a shared machine's speed drifts)")
    parser.add_argument("--compare", default="bfloat16", help="precision compared with float32 on the same weights; 'none' skips")
    parser.add_argument("--compare-batches", type=int, default=4)
    parser.add_argument("--breakdown", action="store_true", help="also time each stage of extract alone, on the largest size")
    parser.add_argument("--io-threads", type=int, default=None, help="extract's codec threads (default: one per core, at most 16)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--workdir", default=None, help="where the stores and outputs go (default: a temporary folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the parent: make stores, run each measurement in a subprocess, print the table -----------


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    with tempfile.TemporaryDirectory(prefix="featpipe-bench-") as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        stores = {size: make_store(workdir / f"images-{size}.h5", size, args) for size in args.sizes}
        runs = {size: {"ceiling": [], "extract": [], "course": []} for size in args.sizes}
        for _ in range(args.rounds):
            for size in args.sizes:
                for way, results in runs[size].items():
                    results.append(child(args, way, stores[size], workdir))
        rows = [(size, *(best(runs[size][way]) for way in ("ceiling", "extract", "course"))) for size in args.sizes]
        compared = child(args, "compare", stores[min(args.sizes)]) if args.compare != "none" else None
        stages = child(args, "stages", stores[max(args.sizes)], workdir) if args.breakdown else None
    print(format_report(args, rows, compared))
    if stages:
        print("\nstages of extract alone, images/s:")
        print("\n".join(f"  {name:<58} {rate:10.1f}" for name, rate in stages["stages"].items()))
    if args.json:
        table = [{"images": size, "ceiling": ceiling, "extract": streamed, "course": course}
                 for size, ceiling, streamed, course in rows]
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "rows": table, "compare": compared, "stages": stages and stages["stages"]}, indent=2))
    return 0


def make_store(path, size, args):
    """A store of ``size`` random uint8 images in ``train`` (and none in ``test``)."""
    from storage.image_store import ImageSplit, write_image_store

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(size, args.image_size, args.image_size, args.channels), dtype=np.uint8)
    labels = np.arange(size) % 10
    empty = ImageSplit(images[:0], labels[:0], [])
    splits = {"train": ImageSplit(images, labels, [f"bench:{i}" for i in range(size)]), "test": empty}
    write_image_store(path, splits, source="benchmark", class_names=[str(i) for i in range(10)], seed=0)
    return path


def best(results):
    """The fastest of repeated runs of one way (what the machine can do), with the largest peak memory seen."""
    fastest = max(results, key=lambda result: result["images_per_second"])
    return fastest | {"peak_rss_mb": max(result["peak_rss_mb"] for result in results)}


def child(args, what, store, workdir=None):
    """Run one measurement in a fresh Python process; its result dict."""
    command = [sys.executable, __file__, "--child", what, "--store", str(store)] + _shared_flags(args)
    if workdir is not None:
        command += ["--workdir", str(workdir)]
    started = time.perf_counter()
    result = run_measurement(command, f"{what} on {store}")
    print(f"  {what:<8} {Path(store).name}: {result.get('images_per_second', '-')} images/s "
          f"({time.perf_counter() - started:.0f} s with start-up)", file=sys.stderr, flush=True)
    return result


def _shared_flags(args):
    flags = ["--backbone", args.backbone, "--batch-size", str(args.batch_size), "--precision", args.precision,
             "--weights", args.weights, "--ceiling-batches", str(args.ceiling_batches), "--compare", args.compare,
             "--compare-batches", str(args.compare_batches)]
    flags += ["--io-threads", str(args.io_threads)] if args.io_threads else []
    return flags + (["--layer", args.layer] if args.layer else [])


def format_report(args, rows, compared):
    """The printed result: a header, one table row per size, memory growth, the precision comparison."""
    first = rows[0][1]
    lines = [
        f"featpipe extract benchmark: {first['backbone']}/{first['layer']} ({first['feature_dim']} floats), "
        f"batch {args.batch_size}, {args.precision}, weights {args.weights}, "
        f"{args.image_size}x{args.image_size}x{args.channels} uint8 images, fastest of {args.rounds} interleaved rounds",
        f"Keras {first['keras']} on {first['backend']}, device {first['device']}, {os.cpu_count()} CPUs here",
        "",
        "(1) ceiling: the compiled forward pass alone on resized + preprocessed tensors in memory",
        "",
        "| images | (1) ceiling, img/s | (2) extract, img/s | (3) course way, img/s | 2/1 | 2/3 | peak RSS (2), MB | peak RSS (3), MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, ceiling, streamed, course in rows:
        lines.append(
            f"| {size} | {ceiling['images_per_second']:.1f} | {streamed['images_per_second']:.1f} | "
            f"{course['images_per_second']:.1f} | "
            f"{streamed['images_per_second'] / ceiling['images_per_second']:.2f} | "
            f"{streamed['images_per_second'] / course['images_per_second']:.2f} | "
            f"{streamed['peak_rss_mb']:.0f} | {course['peak_rss_mb']:.0f} |"
        )
    if len(rows) > 1:
        (small, _, s2, s3), (large, _, l2, l3) = rows[0], rows[-1]
        lines += ["", f"peak RSS growth {small} -> {large} images: (2) extract {_growth(s2, l2)}, (3) course way {_growth(s3, l3)}"]
    if compared:
        lines += [
            "",
            f"{compared['precision']} vs float32, same weights, {compared['images']} images: "
            f"{compared['speed_ratio']:.2f}x the speed ({compared['reduced_images_per_second']:.1f} vs "
            f"{compared['float32_images_per_second']:.1f} images/s); per-row cosine similarity "
            f"min {compared['cosine_min']:.4f}, mean {compared['cosine_mean']:.4f}",
        ]
    lines += ["", TARGETS]
    return "\n".join(lines)


def _growth(smaller, larger):
    return f"{(larger['peak_rss_mb'] / smaller['peak_rss_mb'] - 1) * 100:+.1f}%"


# --- the children: one measurement each ------------------------------------------------------


def run_child(args):
    measure = {
        "ceiling": measure_ceiling, "extract": measure_extract, "course": measure_course,
        "compare": measure_compare, "stages": measure_stages,
    }
    report_result(measure[args.child](args))
    return 0


def fitted_extractor(args, precision=None):
    from features.engine import FeatureExtractor

    extractor = FeatureExtractor(args.backbone, layer=args.layer, weights=args.weights, batch_size=args.batch_size,
                                 precision=precision or args.precision, seed=0)
    return extractor.fit()


def describe(extractor):
    from plumbing.backend import load_keras
    from plumbing.versions import library_versions

    keras = load_keras()
    versions = library_versions()
    return {"backbone": extractor.backbone_.name, "layer": extractor.layer_, "feature_dim": extractor.feature_dim_,
            "keras": versions["keras"], "backend": versions["backend"], "device": ", ".join(keras.distribution.list_devices())}


def prepared_batch(extractor, images):
    """``images`` resized and preprocessed as extract does it, as a tensor on the device."""
    from plumbing.backend import load_keras
    from features.preprocessing import ResizeAndRescale

    keras = load_keras()
    backbone = extractor.backbone_
    layer = ResizeAndRescale(backbone.input_size, images.shape[-1], backbone.channels, backbone.preprocessing)
    return keras.ops.convert_to_tensor(keras.ops.convert_to_numpy(layer(images)))


def measure_ceiling(args):
    """(1): the compiled truncated backbone on one prepared batch, repeated, rows fetched to the host.

    Like extract, the next batch is dispatched before the last one's rows are
    fetched (on JAX; TensorFlow's ``predict_on_batch`` runs each in turn).
    """
    from plumbing.backend import load_keras
    from features.engine import compiled_forward
    from storage.image_store import ImageStore

    extractor = fitted_extractor(args)
    with ImageStore(args.store) as store:
        batch = prepared_batch(extractor, store.images("train", 0, args.batch_size))
        batches = args.ceiling_batches or -(-store.num_rows("train") // args.batch_size)
    forward = compiled_forward(load_keras(), extractor.model_)

    def run(batches):
        ahead = None
        for _ in range(batches):
            launched = forward(batch)
            if ahead is not None:
                np.asarray(ahead)
            ahead = launched
        np.asarray(ahead)

    run(2)  # trace, compile and warm up
    started = time.perf_counter()
    run(batches)
    seconds = time.perf_counter() - started
    return describe(extractor) | {"images_per_second": batches * args.batch_size / seconds}


def measure_extract(args):
    """(2): featpipe's streaming extraction, store to feature file."""
    from features.engine import extract_features

    from storage.image_store import ImageStore

    extractor = fitted_extractor(args)
    with ImageStore(args.store) as store:
        extractor.transform(store.images("train", 0, args.batch_size))  # trace and compile once, untimed
    out = Path(args.workdir) / f"features-{Path(args.store).stem}.h5"
    started = time.perf_counter()
    summary = extract_features(args.store, out, extractor, overwrite=True, progress=False, io_threads=args.io_threads)
    seconds = time.perf_counter() - started
    out.unlink()
    images = sum(summary["rows"].values())
    return {"images_per_second": images / seconds, "seconds": seconds, "first_batch_seconds": summary["first_batch_seconds"],
            "device": summary["device"], "io_threads": summary["io_threads"]}


def measure_course(args):
    """(3): load all, resize all into one array, preprocess_input, model.predict, np.save."""
    from plumbing.backend import load_keras
    from storage.image_store import ImageStore

    keras = load_keras()
    extractor = fitted_extractor(args)
    backbone = extractor.backbone_
    warm_up = np.zeros((args.batch_size,) + tuple(backbone.input_size) + (backbone.channels,), np.float32)
    extractor.model_.predict(warm_up, batch_size=args.batch_size, verbose=0)  # trace and compile once, untimed
    out = Path(args.workdir) / f"course-{Path(args.store).stem}.npy"
    started = time.perf_counter()
    with ImageStore(args.store) as store:
        images = np.concatenate([store.images("train"), store.images("test")])
    x = images.astype("float32")
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, backbone.input_size, interpolation="bilinear"))
    preprocess = backbone.preprocess_function(keras)
    if preprocess is not None:
        x = preprocess(x)
    features = extractor.model_.predict(x, batch_size=args.batch_size, verbose=0)
    np.save(out, features.astype(np.float32))
    seconds = time.perf_counter() - started
    out.unlink()
    return {"images_per_second": len(images) / seconds, "seconds": seconds}


def measure_stages(args):
    """Where extract's time goes: each stage alone, images per second (``--breakdown``)."""
    from plumbing.backend import load_keras
    from storage.chunkio import CodecPool
    from features.engine import iter_feature_batches
    from storage.feature_store import FeatureWriter
    from storage.image_store import ImageStore
    from storage.streaming import RowSink, iter_image_batches

    keras = load_keras()
    extractor = fitted_extractor(args)
    with ImageStore(args.store) as store, CodecPool(args.io_threads) as pool:
        rows = store.num_rows("train")
        batch = store.images("train", 0, args.batch_size)
        forward = extractor._forward_for(batch.shape[1:])
        on_device = keras.ops.convert_to_tensor(batch)
        batches = max(1, rows // args.batch_size)
        rates = {
            "resize+forward, uint8 batch already on device": _rate(lambda: np.asarray(forward(on_device)), batches, args.batch_size),
            "transform() of one uint8 batch from host memory": _rate(lambda: extractor.transform(batch), batches, args.batch_size),
        }
        started = time.perf_counter()
        count = sum(len(images) for _, images in iter_image_batches(store, "train", 0, None, args.batch_size, pool=pool))
        rates["reader thread alone (decompress, batch)"] = count / (time.perf_counter() - started)
        started = time.perf_counter()
        features = np.concatenate([rows_ for _, rows_ in iter_feature_batches(extractor, store, "train", pool=pool)])
        rates["reader thread + transform, no writing"] = rows / (time.perf_counter() - started)
        splits = {"train": (store.labels("train"), store.ids("train"))}
        out = Path(args.workdir) / "stages.h5"
        started = time.perf_counter()
        with FeatureWriter(out, attrs={"feature_dim": features.shape[1]}, splits=splits, overwrite=True, pool=pool) as writer:
            sink = RowSink(writer)
            for start in range(0, rows, args.batch_size):
                sink.put("train", features[start : start + args.batch_size])
            sink.close()
            writer.finish()
        rates["writing alone (RowSink + FeatureWriter), these features"] = rows / (time.perf_counter() - started)
    out.unlink(missing_ok=True)
    return {"stages": rates, "images_per_second": None}


def _rate(call, batches, batch_size):
    call()
    call()  # trace, compile and warm up
    started = time.perf_counter()
    for _ in range(batches):
        call()
    return batches * batch_size / (time.perf_counter() - started)


def measure_compare(args):
    """A reduced precision against float32 on the same weights: speed and per-row cosine."""
    from storage.image_store import ImageStore

    exact = fitted_extractor(args, "float32")
    reduced = fitted_extractor(args, args.compare)
    reduced.model_.set_weights(exact.model_.get_weights())
    with ImageStore(args.store) as store:
        images = store.images("train", 0, args.compare_batches * args.batch_size)
    rates, rows = {}, {}
    for name, extractor in (("float32", exact), ("reduced", reduced)):
        extractor.transform(images[: args.batch_size])  # trace and warm up
        started = time.perf_counter()
        rows[name] = extractor.transform(images)
        rates[name] = len(images) / (time.perf_counter() - started)
    a, b = rows["float32"], rows["reduced"]
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return {
        "precision": args.compare, "images": len(images),
        "float32_images_per_second": rates["float32"], "reduced_images_per_second": rates["reduced"],
        "speed_ratio": rates["reduced"] / rates["float32"], "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
    }


if __name__ == "__main__":
    sys.exit(main())
