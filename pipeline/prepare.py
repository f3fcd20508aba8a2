"""The `prepare` stage: bring a labelled image source into ``data/prepared/images.h5``.

Reads ``params.yaml`` (``seed`` and ``data.*``); options given on the command
line override it. The work is :func:`sources.prepare_dataset` and
:func:`storage.image_store.write_image_store`; this module only wires them to
params and prints a summary for people.
"""

import click

from pipeline import paths
from pipeline.options import params_option
from pipeline.stage import stage_params
from sources import prepare_dataset
from storage.image_store import SPLITS, write_image_store

SKIPPED_SHOWN = 5


class SubsetSize(click.ParamType):
    """A positive number of images, or ``all`` for the whole split (``null`` in params.yaml)."""

    name = "N|all"
    ALL = "all"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == self.ALL:
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"expected a whole number or 'all', got {value!r}", param, ctx)


@click.command()
@params_option
@click.option("--source", default=None, help="fashion_mnist, cifar10 or folder  [data.source]")
@click.option("--path", "data_path", default=None, help="Local copy of the source, or the image folder  [data.path]")
@click.option(
    "--train-size", type=SubsetSize(), default=None, metavar="N|all",
    help="Stratified training subset; 'all' keeps every image  [data.train_size]",
)  # fmt: skip
@click.option(
    "--test-size", type=SubsetSize(), default=None, metavar="N|all",
    help="Stratified test subset; 'all' keeps every image  [data.test_size]",
)  # fmt: skip
@click.option(
    "--image-size", type=int, default=None,
    help="Folder source: side of the square images, in pixels  [data.image_size]",
)  # fmt: skip
@click.option(
    "--test-fraction", type=float, default=None,
    help="Folder source without train/ and test/: share held out  [data.test_fraction]",
)  # fmt: skip
@click.option(
    "--max-bad-fraction", type=float, default=None,
    help="Folder source: share of unreadable files tolerated  [data.max_bad_fraction]",
)  # fmt: skip
@click.option(
    "--workers", type=int, default=None,
    help="Folder source: processes decoding images at once; default one per core  [data.workers]",
)  # fmt: skip
@click.option("--seed", type=int, default=None, help="Seed of subsets and splits  [seed]")
@click.option(
    "--out", type=click.Path(dir_okay=False), default=str(paths.IMAGE_STORE), show_default=True,
    help="Image store to write.",
)  # fmt: skip
def prepare(params_path, seed, out, **data_options):
    """Read a labelled image source and write the canonical uint8 image store."""
    params = params_with_options(params_path, seed, data_options)
    data = params["data"]
    dataset = prepare_dataset(
        data["source"],
        data["path"],
        seed=params["seed"],
        train_size=data["train_size"],
        test_size=data["test_size"],
        image_size=data["image_size"],
        test_fraction=data["test_fraction"],
        max_bad_fraction=data["max_bad_fraction"],
        progress=True,
        workers=data["workers"],
    )
    write_image_store(
        out,
        dataset.splits,
        source=dataset.source,
        class_names=dataset.class_names,
        seed=params["seed"],
        train_size=data["train_size"],
        test_size=data["test_size"],
        skipped=dataset.skipped,
        threads=data["workers"],
    )
    click.echo(summary(dataset, out, image_size_ignored=data_options["image_size"] is not None))


def params_with_options(params_path, seed, data_options):
    """The params with the command-line options that were given, each validated like a params value."""
    options = {"path" if key == "data_path" else key: value for key, value in data_options.items()}
    # `--train-size all` stands for null, which an override can't say (None means "not given").
    whole_split = [key for key in ("train_size", "test_size") if options[key] == SubsetSize.ALL]
    for key in whole_split:
        options[key] = None
    params = stage_params(params_path, seed=seed, section="data", **options)
    for key in whole_split:
        params["data"][key] = None
    return params


def summary(dataset, out, image_size_ignored=False):
    """A few lines for people: counts per split and class, skipped files, where the store is."""
    train = dataset.splits["train"]
    height, width, channels = train.images.shape[1:]
    lines = [f"{dataset.source} from {dataset.location}: images {height}x{width}x{channels}"]
    if image_size_ignored and dataset.source != "folder":
        lines.append(f"  (--image-size applies to the folder source; {dataset.source} keeps its native size)")
    name_width = max(len("class"), *(len(name) for name in dataset.class_names))
    lines.append(f"  {'class':<{name_width}}  " + "  ".join(f"{split:>7}" for split in SPLITS))
    counts = {split: dataset.class_counts(split) for split in SPLITS}
    for label, name in enumerate(dataset.class_names):
        lines.append(f"  {name:<{name_width}}  " + "  ".join(f"{counts[split][label]:>7}" for split in SPLITS))
    lines.append(f"  {'total':<{name_width}}  " + "  ".join(f"{len(dataset.splits[s].labels):>7}" for s in SPLITS))
    lines.extend(skipped_lines(dataset.skipped))
    lines.append(f"wrote {out}")
    return "\n".join(lines)


def skipped_lines(skipped):
    if not skipped:
        return []
    lines = [f"skipped {len(skipped)} unreadable file(s) (all listed in the store's 'skipped' table):"]
    lines.extend(f"  {path}: {reason}" for path, reason in skipped[:SKIPPED_SHOWN])
    if len(skipped) > SKIPPED_SHOWN:
        lines.append(f"  ... and {len(skipped) - SKIPPED_SHOWN} more")
    return lines
