"""The `backbones` stage. (Placeholder: being built.)"""

import click

from features.errors import FeatpipeError


@click.command()
def backbones():
    """Not built yet."""
    raise FeatpipeError("featpipe backbones is not built yet")
