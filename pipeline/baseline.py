"""The `baseline` stage. (Placeholder: being built.)"""

import click

from features.errors import FeatpipeError


@click.command()
def baseline():
    """Not built yet."""
    raise FeatpipeError("featpipe baseline is not built yet")
