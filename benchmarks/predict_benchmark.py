"""How fast is `featpipe predict` on a folder of JPEGs, against decoding and extracting the same images?

In one run, on the same synthetic JPEG photos, this measures and prints:

1. the ceiling: the backbone's compiled forward pass alone on tensors
   already resized and preprocessed, in memory
   (``extract_benchmark.measure_ceiling``);
2. the baseline: what the pipeline does to the same files before a model
   sees them: ``prepare``'s decoding (the same process pool, EXIF, resize
   and crop) into an image store, then ``extract_features`` of that store;
3. predict: :func:`classifiers.predictions.iter_file_predictions` over the
   folder, with a forest on the backbone's features, every row written to
   the predictions CSV; the files are decoded where ``featpipe predict``
   decodes them (:func:`pipeline.predict.decoding_processes`: a process per
   core beside an accelerator, on a thread of this process when the forward
   pass needs the CPU; both overlap the forward pass);

images per second of each, the ratios 3/2 (target >= 0.9) and 3/1 (on a
GPU: target >= 0.8), and the peak resident memory of each at each folder
size, with predict's growth from the smallest to the largest (target: flat).

Each measurement runs in a fresh subprocess (its peak memory is its own),
``--rounds`` times interleaved with the others; the fastest run counts.
Timings exclude building the model, loading weights and one warm-up batch
(the same for every way). Setup, untimed: the JPEG folders, and a model
trained by the featpipe commands themselves (prepare, extract, train ``rf``)
on a small folder of the same kind of photos. Weights default to ``none``
(random, seeded): speed doesn't depend on the values, and this runs offline.

Usage::

    python benchmarks/predict_benchmark.py --sizes 64 256 --rounds 1          # a check, tiny
    python benchmarks/predict_benchmark.py --backbone mobilenet_v2 --sizes 1000 8000 --image-size 64
    # a GPU box (JAX), VGG16 on 224x224 photos:
    KERAS_BACKEND=jax python benchmarks/predict_benchmark.py --backbone vgg16 --sizes 4000 --image-size 224 \\
        --photo-size 320 256 --batch-size 256 --precision mixed_float16 --rounds 1 --json gpu-predict.json

``--backbone`` takes a registry name or a ``.keras`` model file (with ``--layer``).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import report_result, run_measurement  # noqa: E402

TARGETS = "targets: 3/2 >= 0.9; 3/1 >= 0.8 on a GPU (decoding on every core); peak RSS of 3 flat across sizes"
CLASSES = ("a", "b")
TRAINING_PHOTOS = 32


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="mobilenet_v2", help="registry name or a .keras model file")
    parser.add_argument("--layer", default=None, help="default: the backbone's (needed for a .keras file)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000], help="JPEG files in the folder")
    parser.add_argument("--image-size", type=int, default=64, help="the image store's (and the model's) side, in pixels")
    parser.add_argument("--photo-size", type=int, nargs=2, default=[320, 240], metavar=("WIDTH", "HEIGHT"),
                        help="the JPEGs' size (decoded, resized and cropped to --image-size)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "mixed_float16"])
    parser.add_argument("--weights", default="none", help="none (default), imagenet or a weights file")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding processes (default: prepare's, one per core; predict's, pipeline.predict.decoding_processes)")
    parser.add_argument("--rounds", type=int, default=2, help="times each way runs, interleaved; the fastest counts")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    parser.add_argument("--workdir", default=None, help="where the photos, the project and the outputs go (default: a temporary folder)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--store", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the parent: photos, a trained model, each measurement in a subprocess, the table -----------


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return run_child(args)
    with tempfile.TemporaryDirectory(prefix="featpipe-predict-bench-") as scratch:
        workdir = Path(args.workdir or scratch).absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        folders = {size: make_photos(workdir / f"photos-{size}", size, args.photo_size, seed=size) for size in args.sizes}
        model, store = train_a_model(workdir / "project", args)
        runs = {size: {"ceiling": [], "baseline": [], "predict": []} for size in args.sizes}
        for _ in range(args.rounds):
            for size in args.sizes:
                for way, results in runs[size].items():
                    results.append(child(args, way, folders[size], model, store, workdir))
    rows = [(size, *(best(runs[size][way]) for way in ("ceiling", "baseline", "predict"))) for size in args.sizes]
    print(format_report(args, rows))
    if args.json:
        table = [{"images": size, "ceiling": ceiling, "baseline": baseline, "predict": predicted}
                 for size, ceiling, baseline, predicted in rows]
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": table}, indent=2))
    return 0


def make_photos(folder, count, photo_size, seed):
    """``count`` JPEGs of ``photo_size`` (width, height) in class folders ``a/`` and ``b/``: smooth colour fields and noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = photo_size
    for index in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(coarse, np.int16) + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8)
        path = folder / CLASSES[index % len(CLASSES)] / f"{index:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(path, quality=90)
    return folder


def train_a_model(project, args):
    """A forest on the backbone's features, trained by featpipe's own commands; ``(model folder, image store)``."""
    import yaml

    shutil.rmtree(project, ignore_errors=True)
    # At least a batch in the training split: the ceiling runs on one batch of the project's store.
    make_photos(project / "photos", max(TRAINING_PHOTOS, 2 * args.batch_size), args.photo_size, seed=1)
    backbone = str(Path(args.backbone).absolute()) if args.backbone.endswith(".keras") else args.backbone
    layer = args.layer or _default_layer(backbone)
    params = {
        "seed": 0,
        "data": {"source": "folder", "path": "photos", "image_size": args.image_size, "test_fraction": 0.25},
        "extract": {"backbones": [{"name": backbone, "layer": layer}], "batch_size": args.batch_size,
                    "precision": args.precision, "weights": args.weights},
        "train": {"classifiers": ["rf"], "rf": {"n_estimators": 50}},
    }
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for stage in ("prepare", "extract", "train"):
        done = subprocess.run([sys.executable, "-c", "from pipeline.cli import main; main()", stage], cwd=project,
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _python_path()})
        if done.returncode != 0:
            raise SystemExit(f"setup: featpipe {stage} failed:\n{done.stderr[-3000:]}")
    model = next((project / "data" / "models").iterdir())
    return model, project / "data" / "prepared" / "images.h5"


def _python_path():
    """This checkout first, then whatever the caller had (a GPU box's carried wheels)."""
    here = str(Path(__file__).resolve().parents[1])
    return os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))


def _default_layer(backbone):
    from features.backbones import resolve_layer

    if backbone.endswith(".keras"):
        raise SystemExit("--layer is needed with a .keras backbone")
    return resolve_layer(backbone)


def best(results):
    """The fastest of repeated runs of one way, with the largest peak memory seen."""
    fastest = max(results, key=lambda result: result["images_per_second"])
    return fastest | {"peak_rss_mb": max(result["peak_rss_mb"] for result in results)}


def child(args, way, folder, model, store, workdir):
    """Run one measurement in a fresh Python process; its result dict."""
    command = [sys.executable, __file__, "--child", way, "--folder", str(folder), "--model", str(model), "--store", str(store),
               "--workdir", str(workdir), "--backbone", args.backbone, "--batch-size", str(args.batch_size),
               "--precision", args.precision, "--weights", args.weights, "--image-size", str(args.image_size)]
    command += (["--layer", args.layer] if args.layer else []) + (["--workers", str(args.workers)] if args.workers else [])
    started = time.perf_counter()
    result = run_measurement(command, f"{way} on {folder}")
    print(f"  {way:<8} {Path(folder).name}: {result['images_per_second']:.1f} images/s "
          f"({time.perf_counter() - started:.0f} s with start-up)", file=sys.stderr, flush=True)
    return result


def format_report(args, rows):
    """The printed result: a header, one row per folder size, predict's memory growth, the targets."""
    first = rows[0][1]
    lines = [
        f"featpipe predict benchmark: {first['backbone']}/{first['layer']}, batch {args.batch_size}, {args.precision}, "
        f"weights {args.weights}, JPEGs {args.photo_size[0]}x{args.photo_size[1]} to {args.image_size}x{args.image_size}, "
        f"decoding on {args.workers or os.cpu_count()} process(es) for (2) and {rows[0][3]['decoding_processes']} for (3), "
        f"fastest of {args.rounds} interleaved rounds",
        f"Keras {first['keras']} on {first['backend']}, device {first['device']}, {os.cpu_count()} CPUs here",
        "",
        "(1) ceiling: the compiled forward pass alone on resized + preprocessed tensors in memory",
        "(2) baseline: prepare's decoding into an image store, then extract of that store",
        "(3) predict: the folder through the model, to the CSV",
        "",
        "| files | (1) ceiling, img/s | (2) decode + extract, img/s | (3) predict, img/s | 3/2 | 3/1 | peak RSS (2), MB | peak RSS (3), MB |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, ceiling, baseline, predicted in rows:
        lines.append(
            f"| {size} | {ceiling['images_per_second']:.1f} | {baseline['images_per_second']:.1f} | "
            f"{predicted['images_per_second']:.1f} | {predicted['images_per_second'] / baseline['images_per_second']:.2f} | "
            f"{predicted['images_per_second'] / ceiling['images_per_second']:.2f} | {baseline['peak_rss_mb']:.0f} | "
            f"{predicted['peak_rss_mb']:.0f} |"
        )
    if len(rows) > 1:
        (small, _, small_baseline, small_predict), (large, _, large_baseline, large_predict) = rows[0], rows[-1]
        lines += ["", f"peak RSS growth {small} -> {large} files: (3) predict {_growth(small_predict, large_predict)}, "
                      f"(2) decode + extract {_growth(small_baseline, large_baseline)}"]
    lines += ["", "baseline split: " + ", ".join(
        f"{size} files: decode {baseline['decode_seconds']:.1f} s + extract {baseline['extract_seconds']:.1f} s"
        for size, _, baseline, _ in rows)]
    return "\n".join(lines + ["", TARGETS])


def _growth(smaller, larger):
    return f"{(larger['peak_rss_mb'] / smaller['peak_rss_mb'] - 1) * 100:+.1f}%"


# --- the children: one measurement each ------------------------------------------------------


def run_child(args):
    measure = {"ceiling": measure_ceiling, "baseline": measure_baseline, "predict": measure_predict}
    report_result(measure[args.child](args))
    return 0


def photo_paths(folder):
    return sorted(path for path in Path(folder).rglob("*.jpg"))


def measure_ceiling(args):
    """(1): ``extract_benchmark``'s ceiling, on the project's image store, as many batches as the folder has images."""
    from benchmarks import extract_benchmark

    count = len(photo_paths(args.folder))
    ceiling_args = argparse.Namespace(
        backbone=_backbone(args), layer=args.layer, weights=args.weights, batch_size=args.batch_size,
        precision=args.precision, store=args.store, ceiling_batches=-(-count // args.batch_size),
    )  # fmt: skip
    return extract_benchmark.measure_ceiling(ceiling_args)


def _backbone(args):
    return str(Path(args.backbone).absolute()) if args.backbone.endswith(".keras") else args.backbone


def measure_baseline(args):
    """(2): decode the folder as ``prepare`` does and write the image store, then extract every image of it."""
    from features.engine import FeatureExtractor, extract_features
    from storage.image_store import write_image_store
    from sources import prepare_dataset

    extractor = FeatureExtractor(_backbone(args), layer=args.layer, weights=args.weights, batch_size=args.batch_size,
                                 precision=args.precision, seed=0).fit()
    extractor.transform(np.zeros((args.batch_size, args.image_size, args.image_size, 3), np.uint8))  # trace once, untimed
    store, out = Path(args.workdir) / "baseline-images.h5", Path(args.workdir) / "baseline-features.h5"
    started = time.perf_counter()
    dataset = prepare_dataset("folder", args.folder, seed=0, image_size=args.image_size, test_fraction=0.2,
                              max_bad_fraction=0.0, progress=False, workers=args.workers)
    write_image_store(store, dataset.splits, source="folder", class_names=dataset.class_names, seed=0)
    decoded = time.perf_counter()
    summary = extract_features(store, out, extractor, overwrite=True, progress=False)
    finished = time.perf_counter()
    store.unlink()
    out.unlink()
    images = sum(summary["rows"].values())
    return {"images_per_second": images / (finished - started), "decode_seconds": decoded - started,
            "extract_seconds": finished - decoded}


def measure_predict(args):
    """(3): every file of the folder through the loaded model, into the predictions CSV."""
    from classifiers.loading import load_model
    from classifiers.predictions import PredictionsCSV, iter_file_predictions
    from plumbing.backend import load_keras
    from plumbing.versions import library_versions

    from pipeline.predict import decoding_processes

    model = load_model(args.model, batch_size=args.batch_size, precision=args.precision)
    workers = decoding_processes(args.workers, None)  # what `featpipe predict` chooses
    model.predict_with_scores(np.zeros((args.batch_size,) + model.image_shape, np.uint8))  # trace once, untimed
    paths = photo_paths(args.folder)
    out = Path(args.workdir) / "predictions.csv"
    started = time.perf_counter()
    with PredictionsCSV(out, "path", model.class_names, model.classes_, model.score_kind) as written:
        for rows in iter_file_predictions(model, paths, batch_size=args.batch_size, workers=workers):
            written.write(rows)
    seconds = time.perf_counter() - started
    out.unlink()
    versions = library_versions()
    return {"images_per_second": len(paths) / seconds, "seconds": seconds, "backbone": model.metadata["backbone"],
            "layer": model.metadata["layer"], "keras": versions["keras"], "backend": versions["backend"],
            "device": ", ".join(load_keras().distribution.list_devices()), "unreadable": len(written.unreadable),
            "decoding_processes": workers or os.cpu_count()}


if __name__ == "__main__":
    sys.exit(main())
