"""Where a built-in set is looked for (:func:`load_builtin`), ending with Keras' cache and download.

Keras (and TensorFlow behind it) is imported only inside
:func:`download_with_keras`: importing it costs seconds, and ``featpipe
--help`` or a run from a local copy must not pay that.
"""

import importlib

from plumbing.backend import keras_home, load_keras
from plumbing.errors import FeatpipeError, first_line
from sources.dataset import existing_folder


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


def load_builtin(name, path, locations, *, missing, read, from_keras, advice):
    """Read built-in set ``name`` from the first place that has it, in the order every built-in source keeps.

    ``path`` when given, and nowhere else then; else the first of
    ``locations`` where ``missing(folder)`` lists nothing; else Keras'
    download, or one line naming where a copy was looked for and ``advice``.

    Parameters
    ----------
    name : str, the source's name, for messages
    path : str or None, ``data.path``
    locations : list of Path, the local copies searched when ``path`` is None
    missing : callable, folder -> list of the set's files it lacks
    read : callable, folder -> Dataset
    from_keras : callable, ``((x_train, y_train), (x_test, y_test))`` as Keras gives them -> Dataset
    advice : str, what to do when no copy is found
    """
    if path is not None:
        return read(existing_folder(name, path))
    folder = first_complete(locations, missing)
    if folder is not None:
        return read(folder)
    return from_keras(download_or_explain(name, locations, advice))


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
