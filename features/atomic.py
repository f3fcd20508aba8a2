"""Write aside, then rename: outputs appear whole or not at all.

Every file featpipe writes goes through :func:`atomic_output` (or
:func:`write_bytes_atomically`, built on it): the content is written under a
name beside the final one, flushed to disk, and only then renamed onto the
final name, so a reader (or DVC) never sees half a file, whatever kills the
writer.
"""

import contextlib
import os
import uuid
from pathlib import Path

from features.errors import FeatpipeError


def partial_path(final):
    """The write-aside name of ``final``: ``<final>.partial``."""
    final = Path(final)
    return final.with_name(final.name + ".partial")


@contextlib.contextmanager
def atomic_output(final, *, keep_partial_on_error=False, unique=False, suffix=""):
    """Yield a path beside ``final``; rename it onto ``final`` if the block succeeds.

    Parameters
    ----------
    final : path-like
        Where the finished file must end up.
    keep_partial_on_error : bool
        Keep the write-aside file when the block raises, so that a resumable
        writer can pick it up on the next run. Otherwise it is removed.
    unique : bool
        Name the write-aside file after this process and a random token
        instead of ``<final>.partial``: for outputs that several writers may
        race to produce (a Dask task and its retry), where the last rename wins
        and each one is whole.
    suffix : str
        Appended to the write-aside name, for writers that insist on a
        suffix (Keras saves only to ``.keras`` names).
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FeatpipeError(f"cannot create output folder {final.parent}: {error.strerror}") from None
    aside = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial") if unique else partial_path(final)
    aside = aside.with_name(aside.name + suffix)
    try:
        yield aside
        _flush_to_disk(aside)
    except BaseException:
        if not keep_partial_on_error:
            aside.unlink(missing_ok=True)
        raise
    os.replace(aside, final)


def write_bytes_atomically(path, data):
    """Write ``data`` to ``path`` through :func:`atomic_output` with a unique aside name."""
    with atomic_output(path, unique=True) as aside:
        aside.write_bytes(data)


def _flush_to_disk(path):
    """fsync ``path``, so the rename never gets ahead of the bytes (a full disk shows here, not later)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
