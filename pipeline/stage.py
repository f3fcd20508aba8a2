"""What every stage command does first: its params, with the command line's options applied.

One rule for the params file, whichever command reads it: ``params.yaml``
(the default) may be missing, and then every value is its default (the
``extract`` console script on a GPU box needs no project); a file named with
``--params`` must exist. Options given on the command line override the file
and are validated like it, so ``--batch-size 0`` fails the way
``extract.batch_size: 0`` does. User errors are ``FeatpipeError``; the CLI
(:func:`pipeline.cli.run`) prints them as one line with exit code 2.

Stages that train models say here which records they write
(:data:`RECORD_STAGES`): ``report``, ``curves`` and ``explain`` ask them rather
than list model names of their own.
"""

import contextlib
import importlib
import logging
from pathlib import Path

import click

from plumbing.errors import FeatpipeError
from pipeline import paths
from pipeline.params import SCHEMA, defaults, load_params, override

log = logging.getLogger(__name__)

# Each module pipeline/<stage>.py here has ``record_names(params)``: the models it trains, in order.
RECORD_STAGES = ("baseline", "train", "scratch", "finetune")


def stage_params(params_path=None, *, seed=None, section=None, **options):
    """The validated params of a stage, with the options given on the command line.

    Parameters
    ----------
    params_path : str or None
        ``--params``; ``None`` means the project's ``params.yaml``.
    seed : int or None
        ``--seed``, where a command has it.
    section : str or None
        Where ``options`` go, e.g. ``"extract"`` or ``"train.dense"``.
    **options
        Command-line values; ``None`` keeps the file's value.
    """
    params = _read(params_path)
    if seed is not None:
        params["seed"] = SCHEMA["seed"].validate("seed", seed)
    if section:
        params = override(params, section, **options)
    return params


def _read(params_path):
    if params_path is None:
        if not paths.PARAMS_FILE.exists():
            log.info("no %s here; using the default params", paths.PARAMS_FILE)
            return defaults()
        params_path = paths.PARAMS_FILE
    return load_params(Path(params_path))


def expected_records(params):
    """``(model name, stage)`` of every record the params ask for, stage by stage."""
    return [
        (name, stage)
        for stage in RECORD_STAGES
        for name in importlib.import_module(f"pipeline.{stage}").record_names(params)
    ]


@contextlib.contextmanager
def params_key(key):
    """A :class:`FeatpipeError` raised in the block (by a library check) names the params key it is about."""
    try:
        yield
    except FeatpipeError as error:
        raise FeatpipeError(f"params: {key}: {error}") from None


@contextlib.contextmanager
def option_key(option):
    """A :class:`FeatpipeError` raised in the block names the command-line option it is about."""
    try:
        yield
    except FeatpipeError as error:
        raise FeatpipeError(f"{option}: {error}") from None


def keras_verbosity():
    """Keras ``fit``'s ``verbose``: one line per epoch (loss, accuracy, seconds), none under ``featpipe -q``."""
    context = click.get_current_context(silent=True)
    quiet = context is not None and context.find_root().params.get("quiet")
    return 0 if quiet else 2
