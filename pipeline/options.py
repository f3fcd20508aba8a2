"""Options shared by several commands, defined once (rasterio's ``rio/options.py`` pattern)."""

import click

from pipeline import paths
from pipeline.params import load_params

params_option = click.option(
    "--params",
    "params_path",
    type=click.Path(dir_okay=False),
    default=str(paths.PARAMS_FILE),
    show_default=True,
    help="Params file; options given on the command line override it.",
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


def read_params(params_path):
    """Load and validate the params file named by ``--params``."""
    return load_params(params_path)
