"""The `train` stage. (Placeholder: being built.)"""

import click

from features.errors import FeatpipeError


@click.command()
def train():
    """Not built yet."""
    raise FeatpipeError("featpipe train is not built yet")
