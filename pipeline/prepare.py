"""The `prepare` stage. (Placeholder: being built.)"""

import click

from features.errors import FeatpipeError


@click.command()
def prepare():
    """Not built yet."""
    raise FeatpipeError("featpipe prepare is not built yet")
