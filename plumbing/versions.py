"""Versions of featpipe and of the libraries that decide the numbers, for files and checks."""

import importlib.metadata
import sys

import numpy as np


def distribution_version(name):
    """The installed version of distribution ``name``, or ``"unknown"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def featpipe_version():
    """featpipe's version, from the package metadata (``pip install`` records it)."""
    return distribution_version("featpipe")


def library_versions():
    """Versions that decide the numbers: featpipe, Keras and its backend, h5py, NumPy."""
    from plumbing.backend import load_keras

    keras = load_keras()
    backend = keras.backend.backend()
    backend_module = sys.modules.get(backend)
    return {
        "featpipe": featpipe_version(),
        "keras": keras.__version__,
        "backend": f"{backend} {getattr(backend_module, '__version__', 'unknown')}",
        "h5py": distribution_version("h5py"),
        "numpy": np.__version__,
    }
