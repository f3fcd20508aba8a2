"""The `extract` stage. (Placeholder: being built.)"""

import click

from features.errors import FeatpipeError


@click.command()
def extract():
    """Not built yet."""
    raise FeatpipeError("featpipe extract is not built yet")
