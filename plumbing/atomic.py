"""Write aside, then rename: outputs appear whole or not at all.

Every file featpipe writes goes through :func:`atomic_output` (or
:func:`write_bytes_atomically`, built on it): the content is written under a
name beside the final one, flushed to disk, and only then renamed onto the
final name, so a reader (or DVC) never sees half a file, whatever kills the
writer. Long writes (an image store, a feature file) also hold
:func:`exclusive_output`, so two runs never write the same output at once.
"""

import contextlib
import fcntl
import os
import uuid
from pathlib import Path

from plumbing.errors import FeatpipeError


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
        flush_to_disk(aside)
    except BaseException:
        if not keep_partial_on_error:
            aside.unlink(missing_ok=True)
        raise
    os.replace(aside, final)


def write_bytes_atomically(path, data):
    """Write ``data`` to ``path`` through :func:`atomic_output` with a unique aside name."""
    with atomic_output(path, unique=True) as aside:
        aside.write_bytes(data)


def flush_to_disk(path):
    """fsync ``path``, so a rename never gets ahead of the bytes (a full disk shows here, not later)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def lock_path(final):
    """The lock file of ``final``: ``<final>.lock``."""
    final = Path(final)
    return final.with_name(final.name + ".lock")


@contextlib.contextmanager
def exclusive_output(final):
    """Be the only process writing ``final`` (and its ``.partial``) while the block runs.

    An exclusive ``flock`` on ``<final>.lock``: the operating system releases
    it when the process ends, however it ends, so a run killed with
    ``kill -9`` leaves nothing that blocks the resume. A second process is
    refused in one line that names the holder's PID; it never touches the
    first one's partial file.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FeatpipeError(f"cannot create output folder {final.parent}: {error.strerror}") from None
    descriptor = _take_lock(final)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        # Unlinked before it is released: a process that opened it meanwhile sees a
        # stale inode after its flock succeeds, and takes a fresh file (see _take_lock).
        lock_path(final).unlink(missing_ok=True)
        os.close(descriptor)


def _take_lock(final):
    path = lock_path(final)
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise FeatpipeError(f"cannot write {path}: {error.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise FeatpipeError(
                f"another process (PID {holder}) is writing {final}; wait for it to finish (or stop it), then rerun"
            ) from None
        if _same_file(descriptor, path):
            return descriptor
        os.close(descriptor)  # the holder finished and removed it while we waited: take a fresh one


def _same_file(descriptor, path):
    try:
        return os.fstat(descriptor).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
