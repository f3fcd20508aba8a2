"""Write aside, then rename: outputs appear whole or not at all."""

import contextlib
import os
from pathlib import Path


def partial_path(final):
    """The write-aside name of ``final``: ``<final>.partial``."""
    final = Path(final)
    return final.with_name(final.name + ".partial")


@contextlib.contextmanager
def atomic_output(final, *, keep_partial_on_error=False):
    """Yield a path beside ``final``; rename it onto ``final`` if the block succeeds.

    Parameters
    ----------
    final : path-like
        Where the finished file must end up.
    keep_partial_on_error : bool
        Keep the write-aside file when the block raises, so that a resumable
        writer can pick it up on the next run. Otherwise it is removed.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        from features.errors import FeatpipeError

        raise FeatpipeError(f"cannot create output folder {final.parent}: {error.strerror}") from None
    aside = partial_path(final)
    try:
        yield aside
    except BaseException:
        if not keep_partial_on_error:
            aside.unlink(missing_ok=True)
        raise
    os.replace(aside, final)
