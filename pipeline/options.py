"""Options shared by several commands, defined once (rasterio's ``rio/options.py`` pattern)."""

import click

from pipeline import paths

params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Params file; options given on the command line override it. Default: {paths.PARAMS_FILE} "
    "(every value its default when there is none).",
)

images_option = click.option(
    "--images",
    type=click.Path(dir_okay=False),
    default=str(paths.IMAGE_STORE),
    show_default=True,
    help="Image store written by `featpipe prepare`.",
)

scheduler_option = click.option(
    "--scheduler",
    default=None,
    help="Dask scheduler address (tcp://host:8786) to spread the work over; default: params, else this process.",
)

features_option = click.option(
    "--features",
    "feature_paths",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Feature file (repeatable); default: one per extract.backbones entry.",
)
