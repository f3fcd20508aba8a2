"""Run scikit-learn's parallel work on a Dask cluster through joblib's Dask backend.

Forests spread their trees and grid searches their folds with joblib; inside
:func:`joblib_backend` with a scheduler address, those joblib calls become
Dask tasks on the cluster's workers. Results do not depend on where they ran:
a forest draws every tree's seed from ``random_state`` before any is grown.
"""

import contextlib

import joblib


@contextlib.contextmanager
def joblib_backend(scheduler=None):
    """Route joblib work to the Dask scheduler at ``scheduler``; ``None`` keeps it local.

    Parameters
    ----------
    scheduler : str or None
        A ``tcp://host:port`` address. The connection is checked (short
        timeout, workers present, same featpipe version) before any work.

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    FeatpipeError
        The scheduler is unreachable or its workers cannot run featpipe.
    """
    if not scheduler:
        yield None
        return
    from plumbing.cluster import dask_client

    with dask_client(scheduler=scheduler) as client:
        with joblib.parallel_config(backend="dask", client=client):
            yield client
