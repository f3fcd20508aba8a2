"""Keras' dataset cache and download, the last place a built-in set is looked for.

Keras (and TensorFlow behind it) is imported only inside
:func:`download_with_keras`: importing it costs seconds, and ``featpipe
--help`` or a run from a local copy must not pay that.
"""

import importlib

from plumbing.backend import keras_home, load_keras
from plumbing.errors import FeatpipeError, first_line


class DownloadFailed(Exception):
    """Keras could not fetch a dataset; the message says why, in one line."""


def keras_datasets_dir():
    """Where Keras caches datasets: ``<keras home>/datasets``."""
    return keras_home() / "datasets"


def download_with_keras(name):
    """``keras.datasets.<name>.load_data()``: download (or read Keras' cache) and return its arrays.

    Returns
    -------
    ((x_train, y_train), (x_test, y_test)) as Keras gives them.
    """
    try:
        load_keras()  # quietly: TensorFlow's start-up chatter would bury the one line that matters
        module = importlib.import_module(f"keras.datasets.{name}")
    except (FeatpipeError, ImportError) as error:
        raise DownloadFailed(f"Keras is not importable ({error})") from None
    try:
        return module.load_data()
    except Exception as error:  # noqa: BLE001 - network, disk and hash errors all mean "no data"
        raise DownloadFailed(first_line(error)) from None


def first_complete(folders, missing):
    """The first of ``folders`` in which ``missing(folder)`` lists nothing, or None."""
    return next((folder for folder in folders if not missing(folder)), None)


def download_or_explain(name, looked_in, advice):
    """:func:`download_with_keras`, or one line naming where a copy was looked for and ``advice``."""
    try:
        return download_with_keras(name)
    except DownloadFailed as error:
        raise FeatpipeError(
            f"{name}: no local copy found (looked in {', '.join(map(str, looked_in))}) and the Keras download "
            f"failed: {error}. {advice}"
        ) from None
