"""Every core at work, and the same model on any number of them.

A BLAS or OpenMP sum split over more threads adds in another order, so a
fit on two cores can differ from the same fit on one: a logistic
regression's coefficients moved by 1e-3 between one and two BLAS threads on
15,000 x 256 features, enough to change the C its cross-validation picks.
So the scikit-learn heads cut their fits into pieces that each run on one
thread (a fold and a candidate, a block of mapped rows, a block of queries,
a fit of the learning curves) and spread the pieces over the cores with
joblib. The pieces are the same whatever the core count, and so is the model.

Inside :func:`classifiers.fanout.joblib_backend` the pieces go to a Dask
cluster's workers instead, still one thread each.
"""

import contextlib
import os
import tempfile
import threading

import joblib
import numpy as np
from threadpoolctl import threadpool_limits

_pieces_running = 0
_pieces_lock = threading.Lock()
_limits = None


@contextlib.contextmanager
def one_blas_thread():
    """BLAS on one thread while any piece runs in this process.

    BLAS's limit is process-wide, and a Dask worker runs several pieces at
    once in its threads: the first piece to start sets it and the last to end
    lifts it, so that no piece ending lifts it under another. (OpenMP's limit
    belongs to the thread that sets it: each piece sets its own.)
    """
    global _pieces_running, _limits
    with _pieces_lock:
        if _pieces_running == 0:
            _limits = threadpool_limits(limits=1, user_api="blas")
        _pieces_running += 1
    try:
        yield
    finally:
        with _pieces_lock:
            _pieces_running -= 1
            if _pieces_running == 0:
                _limits.restore_original_limits()


def on_one_thread(function, *args, **kwargs):
    """``function(*args, **kwargs)`` on one thread: BLAS and OpenMP limited to one, joblib inside it sequential."""
    with one_blas_thread(), threadpool_limits(limits=1, user_api="openmp"), joblib.parallel_config(backend="sequential"):
        return function(*args, **kwargs)


def fits_in_this_process(estimator):
    """Whether ``estimator`` is fitted here, one at a time, rather than as a one-thread piece.

    True for the Keras heads and CNNs (their class sets ``fits_in_this_process``):
    Keras' own thread pool, or the GPU, already takes the machine, and Keras
    sessions do not share a process well.
    """
    return bool(getattr(estimator, "fits_in_this_process", False))


def run_pieces(function, pieces, n_jobs, as_generator=False):
    """``[function(*piece) for piece in pieces]``, each on one thread, ``n_jobs`` at a time.

    Parameters
    ----------
    function : callable that pickles (it is sent to worker processes)
    pieces : iterable of tuples, the arguments of each call; read as the workers need them
    n_jobs : int, joblib's: -1 for every core, 1 for this process alone
    as_generator : bool, yield each result as it is ready (still in the order of ``pieces``)

    Returns
    -------
    list (or generator), the results in the order of ``pieces``
    """
    parallel = joblib.Parallel(n_jobs=n_jobs, return_as="generator" if as_generator else "list")
    return parallel(joblib.delayed(on_one_thread)(function, *piece) for piece in pieces)


@contextlib.contextmanager
def shared(array):
    """``array`` as a read-only memory map that worker processes open by its file name.

    joblib would otherwise hash and copy an array as large as a feature
    matrix once for every piece it is passed to.

    Yields
    ------
    numpy.memmap with the values of ``array``; its file is removed on exit
    """
    with tempfile.TemporaryDirectory(prefix="featpipe-") as folder:
        path = os.path.join(folder, "array.npy")
        np.save(path, array)
        yield np.load(path, mmap_mode="r")
