"""The ``extract`` stage: image store in, one feature file per backbone out.

``featpipe extract`` (and the ``extract`` console script) reads the
``extract`` section of ``params.yaml``; options override it. Without
``--backbone`` it extracts every entry of ``extract.backbones`` into
``data/features/<name>-<layer>.h5`` (:mod:`pipeline.paths` has the naming
rule); ``--backbone NAME`` makes one entry's file, as each DVC stage does.

``--split train`` (or ``test``) extracts one split only, into a file of its
own (``data/features/<name>-<layer>-train.h5`` unless ``--out`` says
otherwise) that holds only that group; the default ``all`` writes both.

Keras is imported only once a command runs, so ``featpipe --help`` stays fast.
"""

import typing
from pathlib import Path

import click

from plumbing.errors import FeatpipeError
from pipeline import paths
from pipeline.options import images_option, params_option, scheduler_option
from pipeline.stage import stage_params


SPLIT_CHOICES = ("train", "test", "all")


@click.command()
@click.option(
    "--backbone",
    "--name",
    "backbone",
    default=None,
    help="Registry name (see `featpipe backbones`), the name of an extract.backbones entry with a file, or a "
    ".keras model file (named by its stem). Default: every extract.backbones entry.",
)
@click.option(
    "--file",
    "model_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A .keras model file of your own, its files named by --name (default: its stem), as an extract.backbones "
    "entry {name, layer, file} says; dvc.yaml passes each entry this way.",
)
@click.option("--layer", default=None, help="Layer to take features from. Default: the backbone's (vgg: fc2, others: avg_pool).")
@click.option("--weights", default=None, help="imagenet | none (random, seeded: smoke runs only) | path to a .h5/.weights.h5 file.")
@click.option("--batch-size", type=int, default=None, help="Images per forward pass.")
@click.option("--precision", default=None, help="float32 | bfloat16 | mixed_float16 (features are stored as float32).")
@click.option("--device", default=None, help="e.g. gpu:0 or cpu:0. Default: the GPU when there is one.")
@click.option(
    "--split",
    type=click.Choice(SPLIT_CHOICES),
    default="all",
    show_default=True,
    help="One split only, into <name>-<layer>-<split>.h5 unless --out says otherwise.",
)
@images_option
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Feature file. Default: data/features/<name>-<layer>.h5.")
@click.option("--overwrite", is_flag=True, help="Replace an existing feature file made with other settings.")
@params_option
@scheduler_option
@click.option("--workers", type=int, default=None, help="Start a local Dask cluster of this many processes.")
@click.option("--shard-size", type=int, default=None, help="Rows per Dask task  [extract.shard_size]")
@click.option(
    "--io-threads", type=int, default=None,
    help="Threads (de)compressing the image store and the features; default one per core, at most 16  [extract.io_threads]",
)
def extract(
    backbone, model_file, layer, weights, batch_size, precision, device, split, images, out, overwrite, params_path, scheduler, workers,
    shard_size, io_threads,
):
    """Extract CNN features of every prepared image into data/features/<name>-<layer>.h5.

    Resumes an interrupted run, skips a file that is already complete with
    the same settings, and refuses one made with other settings unless
    --overwrite.
    """
    params = stage_params(
        params_path, section="extract", weights=weights, batch_size=batch_size, precision=precision,
        device=device, scheduler=scheduler, workers=workers, shard_size=shard_size, io_threads=io_threads,
    )
    settings = params["extract"]
    settings["seed"] = params["seed"]
    # A cluster named on the command line replaces the one params.yaml names.
    if scheduler and workers is None:
        settings["workers"] = None
    if workers and scheduler is None:
        settings["scheduler"] = None
    requests = _requests(backbone, model_file, layer, settings["backbones"], out)
    if split != "all" and (settings["scheduler"] or settings["workers"]):
        raise FeatpipeError("--split works in this process only; drop --scheduler/--workers (or extract.scheduler/workers)")
    for request in requests:
        summary = extract_one(request, images, settings, split, overwrite)
        click.echo(format_summary(summary, request.name, settings["precision"]))


class Request(typing.NamedTuple):
    """One feature file to make: the name its files go by, the backbone (registry name or model file), its layer."""

    name: str
    backbone: str
    layer: typing.Optional[str]
    out: typing.Optional[str] = None


def _requests(backbone, model_file, layer, configured, out):
    """The :class:`Request` of each feature file to make.

    Without ``--backbone`` (or ``--file``), one per ``extract.backbones``
    entry. ``--name NAME --file FILE`` is an entry with a model file (dvc.yaml
    passes each entry as ``featpipe extract ${item}``: ``--name vgg16 --layer
    fc2``, or ``--name mine --layer embedding --file models/mine.keras``).
    ``--backbone NAME`` alone, NAME an entry's name, takes that entry's file;
    a ``.keras`` path goes by its stem; anything else is a registry name.
    """
    _check_registry_names_kept(configured)
    if model_file is not None:
        return [_file_request(backbone, model_file, layer, out)]
    if backbone is None:
        if layer or out:
            raise FeatpipeError("--layer and --out need --backbone (without it, every extract.backbones entry is made)")
        return [Request(entry["name"], entry.get("file", entry["name"]), entry["layer"]) for entry in configured]
    files = [entry for entry in configured if entry["name"] == backbone and "file" in entry]
    if not files:
        return [Request(paths.backbone_name(backbone), backbone, layer, out)]
    if layer is None and len(files) > 1:
        raise FeatpipeError(
            f"--backbone {backbone} has {len(files)} layers in extract.backbones "
            f"({', '.join(entry['layer'] for entry in files)}); say which with --layer"
        )
    return [Request(backbone, files[0]["file"], layer or files[0]["layer"], out)]


def _file_request(name, model_file, layer, out):
    from features.backbones import BACKBONES, is_model_file

    if not is_model_file(model_file):
        raise FeatpipeError(f"--file: expected a .keras model file, got {model_file}")
    if name is None:
        name = paths.backbone_name(model_file)
    if name in BACKBONES or is_model_file(name):
        raise FeatpipeError(f"--name: expected a name of your own for {model_file} (not a registry backbone's, not a "
                            f"file), got {name!r}")
    return Request(name, model_file, layer, out)


def _check_registry_names_kept(configured):
    """A model file's entry may not take a registry backbone's name: both would make ``<name>-<layer>.h5``."""
    from features.backbones import BACKBONES

    for index, entry in enumerate(configured):
        if "file" in entry and entry["name"] in BACKBONES:
            raise FeatpipeError(
                f"params: extract.backbones[{index}].name: {entry['name']!r} is a registry backbone; "
                f"give {entry['file']} a name of its own"
            )


def extract_one(request, images, settings, split, overwrite):
    """Build the extractor for one backbone and run it (locally or on Dask); the summary dict."""
    from features.weights import RANDOM_WEIGHTS_WARNING

    backbone, layer, out = request.backbone, request.layer, request.out
    _check_request(backbone, layer, settings["weights"], images)
    from features.engine import FeatureExtractor, extract_features

    extractor = FeatureExtractor(
        backbone=backbone, layer=layer, weights=settings["weights"], batch_size=settings["batch_size"],
        precision=settings["precision"], device=settings["device"], seed=settings.get("seed", 0),
    )
    if str(settings["weights"]) == "none":
        click.echo(RANDOM_WEIGHTS_WARNING, err=True)
    if settings["scheduler"] or settings["workers"]:
        return _extract_distributed(images, out, request.name, extractor, settings, overwrite)
    extractor.fit()
    out_path = Path(out) if out else default_out(request.name, extractor.layer_, split)
    splits = None if split == "all" else [split]
    return extract_features(
        images, out_path, extractor, overwrite=overwrite, progress=True, splits=splits, io_threads=settings["io_threads"]
    )


def _check_request(backbone, layer, weights, images):
    """Catch unknown names and missing files before Keras is imported (seconds) or a model built."""
    from features.backbones import is_model_file, resolve_layer
    from features.weights import resolve_weights

    if not is_model_file(backbone):
        resolve_layer(backbone, layer)
    elif not Path(backbone).exists():
        raise FeatpipeError(f"model file not found: {backbone}")
    resolve_weights(weights)
    if not Path(images).exists():
        raise FeatpipeError(f"image store not found: {images} (run `featpipe prepare` first, or pass --images)")


def _extract_distributed(images, out, name, extractor, settings, overwrite):
    from features.distributed import extract_distributed

    from features.backbones import resolve_layer

    layer = resolve_layer(extractor.backbone, extractor.layer)
    out_path = Path(out) if out else default_out(name, layer, "all")
    return extract_distributed(
        images, out_path, extractor, scheduler=settings["scheduler"], workers=settings["workers"],
        shard_size=settings["shard_size"], overwrite=overwrite, progress=True,
    )


def default_out(name, layer, split="all"):
    """``data/features/<name>-<layer>.h5``, or ``...-<split>.h5`` for one split."""
    path = paths.feature_file(name, layer)
    return path if split == "all" else path.with_name(f"{path.stem}-{split}{path.suffix}")


def format_summary(summary, backbone, precision):
    """The lines printed after a feature file is made (or found up to date)."""
    from features.weights import RANDOM_WEIGHTS_WARNING

    rows = summary["rows"]
    total = sum(rows.values()) if isinstance(rows, dict) else rows
    per_split = ", ".join(f"{name} {count}" for name, count in rows.items()) if isinstance(rows, dict) else ""
    if summary.get("skipped_because_complete"):
        lines = [f"up to date: {summary['path']} ({total} rows x {summary['feature_dim']}, same settings); nothing to do"]
    else:
        rate = summary.get("images_per_second")
        lines = [
            f"wrote {summary['path']}",
            f"  rows        {total} ({per_split})",
            f"  dimension   {summary['feature_dim']} float32 ({backbone}, computed in {precision})",
            f"  weights     {summary['weights']}",
            f"  time        {summary['seconds']:.1f} s" + (f", {rate:.1f} images/s" if rate else ""),
        ]
        if summary.get("backend"):
            lines.append(f"  ran on      {summary['device']}, Keras on {summary['backend']}, {summary['io_threads']} I/O thread(s)")
        if summary.get("first_batch_seconds") is not None:
            lines.append(f"  start-up    {summary['first_batch_seconds']:.1f} s from launch to the first batch of features")
        computed = summary.get("rows_computed", total)
        if computed < total:
            lines.append(f"  resumed     {total - computed} rows were already written by an earlier run")
    if summary.get("weights") == "none":
        lines.append(RANDOM_WEIGHTS_WARNING)
    return "\n".join(lines)
