"""The `report` stage. (Placeholder: being built.)"""

import click

from features.errors import FeatpipeError


@click.command()
def report():
    """Not built yet."""
    raise FeatpipeError("featpipe report is not built yet")
