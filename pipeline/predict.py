"""`featpipe predict`: apply a trained model to new images, exactly as its training images went in.

::

    featpipe predict --model data/models/vgg16-fc2-svm photos/ one.jpg --out predictions.csv
    featpipe predict --model data/models/pixel_rf data/prepared/images.h5 --split test

Not a DVC stage: it applies a model (:func:`classifiers.load_model`) to
images DVC does not track. INPUT is image files, folders (searched
recursively; hidden files and folders skipped, as ``prepare`` skips them)
or one image store (``.h5``, its ``--split``). Files are decoded by
``prepare``'s own rules (:mod:`sources.decode`) into the model's image size
and channel mode, so a file and its stored copy predict alike. A file that
cannot be read gets a row with its reason and is listed in the summary; only
no readable image at all stops the command.

Reads ``extract.batch_size``, ``extract.device`` and ``data.workers`` (the
decoding processes; default :func:`decoding_processes`) from ``params.yaml``
when there is one; options override them. Writes ``--out`` aside and renames it when every row is in
(:class:`classifiers.predictions.PredictionsCSV`).
"""

import contextlib
import os
import sys
import time
from pathlib import Path

import click

from pipeline.options import params_option
from pipeline.stage import stage_params
from plumbing.errors import FeatpipeError

STORE_SUFFIX = ".h5"
SHOWN_UNREADABLE = 5


def check_out(out):
    """Refuse, before any work, an ``--out`` that is a folder, a file other than a predictions CSV, or unwritable."""
    from classifiers.predictions import is_predictions_csv
    from classifiers.records import check_can_create

    if out.is_dir():
        raise FeatpipeError(f"--out {out} is a folder; expected the path of a CSV file to write")
    if out.exists() and not is_predictions_csv(out):
        raise FeatpipeError(
            f"--out {out} exists and is not a predictions CSV (its first line is not path|id,predicted,...,reason); "
            f"choose another name, or remove it"
        )
    check_can_create(out.parent)


def resolve_inputs(inputs):
    """``("store", path)`` for one image store, else ``("files", [paths])``: every file given and found in folders."""
    from sources.folder import files_under

    paths = [Path(item) for item in inputs]
    for path in paths:
        if not path.exists():
            raise FeatpipeError(f"INPUT {path} not found; expected image files, folders or one image store (.h5)")
    stores = [path for path in paths if path.is_file() and path.suffix == STORE_SUFFIX]
    if stores:
        if len(paths) > 1:
            raise FeatpipeError(f"INPUT: an image store ({stores[0]}) goes alone; got {len(paths)} inputs")
        return "store", stores[0]
    files = []
    for path in paths:
        files.extend([path / relative for relative in files_under(path, path)] if path.is_dir() else [path])
    if not files:
        raise FeatpipeError(f"no images in INPUT {', '.join(map(str, paths))}: the folders hold no (visible) files")
    return "files", files


@contextlib.contextmanager
def new_folders_removed_on_error(path):
    """Remove the folders above ``path`` that didn't exist before, when the block fails: nothing is left behind."""
    created = [parent for parent in Path(path).absolute().parents if not parent.exists()]
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def decoding_processes(workers, device):
    """How many processes decode image files: ``data.workers`` when set.

    Else every core when the model computes on an accelerator (decoding is
    then what limits the rate), and a thread of this process when it computes on
    the CPU: its forward pass needs those cores, decoding is a few percent
    of its work there, and decoding processes beside it slowed it down
    (``benchmarks/predict_benchmark.py --workers``). A model that never
    imported Keras (the pixel forest) computes on the CPU.
    """
    if workers:
        return workers
    if "keras" not in sys.modules or str(device or "").startswith("cpu"):
        return 1
    from plumbing.backend import load_keras

    return None if any(not str(name).lower().startswith("cpu") for name in load_keras().distribution.list_devices()) else 1


def predicted_batches(model, kind, source, options, split, workers, cluster):
    """The model's :class:`~classifiers.predictions.PredictedRows` of INPUT, batch after batch, in input order."""
    from classifiers.predictions import iter_distributed_file_predictions, iter_file_predictions, iter_store_predictions

    if kind == "store":
        return iter_store_predictions(model, source, split, batch_size=model.batch_size)
    if cluster is None:
        return iter_file_predictions(model, source, batch_size=model.batch_size, workers=workers)
    return iter_distributed_file_predictions(cluster, options["folder"], options["load"], source)


def summary(model, written, out, seconds, precision=None, own_precision=None, decoding=None):
    """The lines printed when the CSV is written; ``precision`` when ``--precision`` replaced ``own_precision``;
    ``decoding`` says where the files were decoded."""
    from features.weights import RANDOM_WEIGHTS_WARNING

    total = written.rows_read + len(written.unreadable)
    counts = ", ".join(f"{name} {count}" for name, count in sorted(written.counts.items(), key=lambda item: -item[1]))
    lines = [
        f"predict: {model.name} on {written.rows_read} image(s) -> {out}",
        f"  predicted   {counts}",
        f"  scores      {'probabilities' if model.score_kind == 'probability' else 'decision values (the model has no probabilities)'}",
    ]
    if written.unreadable:
        lines.append(f"  unreadable  {len(written.unreadable)} of {total} file(s) (the CSV's reason column):")
        lines += [f"    {key}: {reason}" for key, reason in written.unreadable[:SHOWN_UNREADABLE]]
        if len(written.unreadable) > SHOWN_UNREADABLE:
            lines.append(f"    ... and {len(written.unreadable) - SHOWN_UNREADABLE} more")
    if decoding:
        lines.append(f"  decoding    {decoding}")
    if precision and precision != own_precision:
        lines.append(f"  precision   {precision}, not the {own_precision} the model's features were made in")
    lines.append(f"  time        {seconds:.1f} s, {total / seconds:.1f} images/s" if seconds > 0 else "  time        0 s")
    if model.record.random_weights:
        lines.append(RANDOM_WEIGHTS_WARNING)
    return "\n".join(lines)


def no_image_read(written):
    shown = "; ".join(f"{key} ({reason})" for key, reason in written.unreadable[:3])
    more = f"; and {len(written.unreadable) - 3} more" if len(written.unreadable) > 3 else ""
    return FeatpipeError(f"none of the {len(written.unreadable)} file(s) could be read as an image: {shown}{more}")


@click.command()
@click.option(
    "--model", "model_folder", required=True, type=click.Path(file_okay=False),
    help="A model folder, data/models/<name> (any row of reports/report.md).",
)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(), metavar="INPUT...")
@click.option(
    "--out", default="predictions.csv", show_default=True, type=click.Path(),
    help="The CSV to write; an earlier predictions CSV there is replaced, any other file refused.",
)
@click.option("--split", type=click.Choice(["test", "train"]), default="test", show_default=True,
              help="The split of an image store INPUT (.h5) to predict.")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass  [extract.batch_size]")
@click.option("--device", default=None, help="e.g. gpu:0 or cpu:0; default: the GPU when there is one  [extract.device]")
@click.option("--precision", default=None,
              help="A feature model's backbone: float32 | bfloat16 | mixed_float16; default: the one its features were made in.")
@params_option
@click.option("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786) to spread image files over.")
@click.option("--workers", type=int, default=None, help="Start a local Dask cluster of this many processes for image files.")
def predict(model_folder, inputs, out, split, batch_size, device, precision, params_path, scheduler, workers):
    """Apply a trained model to image files, folders or an image store; write one CSV row per image."""
    from classifiers.loading import load_model
    from classifiers.records import read_card
    from features.engine import PRECISIONS
    from features.weights import RANDOM_WEIGHTS_WARNING

    params = stage_params(params_path, section="extract", batch_size=batch_size, device=device)
    if workers is not None and workers < 1:
        raise FeatpipeError(f"--workers: expected a number of local Dask worker processes, 1 or more, got {workers}")
    if precision is not None and precision not in PRECISIONS:
        raise FeatpipeError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    out = Path(out)
    check_out(out)
    kind, source = resolve_inputs(inputs)
    if kind == "store" and (scheduler or workers):
        raise FeatpipeError("--scheduler and --workers spread image files over Dask; an image store is read in this process")
    load = {"batch_size": params["extract"]["batch_size"], "device": params["extract"]["device"], "precision": precision}
    model = load_model(model_folder, **load)
    total = _count(model, kind, source, split)
    if model.record.random_weights:
        click.echo(RANDOM_WEIGHTS_WARNING, err=True)
    click.echo(f"predict: {model.name} on {total} {'image(s) of ' + str(source) if kind == 'store' else 'file(s)'}", err=True)
    started = time.perf_counter()
    options = {"folder": model_folder, "load": load, "split": split, "scheduler": scheduler, "workers": workers,
               "decoding": decoding_processes(params["data"]["workers"], params["extract"]["device"])}
    written, decoding = write_predictions(model, kind, source, out, total, options)
    own = read_card(model_folder)["extractor"]["precision"] if precision else None
    click.echo(summary(model, written, out, time.perf_counter() - started, precision, own, decoding))


def write_predictions(model, kind, source, out, total, options):
    """Predict every image of INPUT into the CSV ``out``, with a progress bar; ``(the written CSV, where files were decoded)``.

    Nothing is left at ``out`` (nor folders made for it) when no image could be read or anything fails.
    """
    from classifiers.predictions import PredictionsCSV, count_rows
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as stack:
        spread = kind == "files" and (options["scheduler"] or options["workers"])
        cluster = _cluster(stack, options["scheduler"], options["workers"]) if spread else None
        stack.enter_context(new_folders_removed_on_error(out))
        written = stack.enter_context(PredictionsCSV(
            out, "id" if kind == "store" else "path", model.class_names, model.classes_, model.score_kind
        ))  # fmt: skip
        bar = stack.enter_context(tqdm(total=total, unit="img", desc=model.name, file=sys.stderr))
        batches = predicted_batches(model, kind, source, options, options["split"], options["decoding"], cluster)
        for rows in count_rows(batches, bar):
            written.write(rows)
        if not written.rows_read:
            raise no_image_read(written)
    return written, _decoding_words(kind, options["decoding"], cluster)


def _decoding_words(kind, processes, cluster):
    if kind == "store":
        return None
    if cluster is not None:
        return "on the Dask workers"
    return "on a thread of this process" if processes == 1 else f"{processes or os.cpu_count()} processes"


def _count(model, kind, source, split):
    """How many images INPUT holds; an image store is checked against the model first."""
    if kind == "files":
        return len(source)
    from classifiers.predictions import check_store_shape
    from storage.image_store import ImageStore

    with ImageStore(source) as store:
        check_store_shape(model, store.image_shape(split), source)
        return store.num_rows(split)


def _cluster(stack, scheduler, workers):
    from plumbing.cluster import dask_client

    client = stack.enter_context(dask_client(scheduler, workers))
    click.echo(f"predict: Dask, {len(client.scheduler_info()['workers'])} worker(s) at {client.scheduler.address}; "
               f"each loads the model once", err=True)
    return client
