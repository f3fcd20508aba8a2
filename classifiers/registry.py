"""The classifier registry: a name maps to a builder and a way to save what it fits.

Adding a classifier is one decorated function (timm's ``_registry.py``
pattern)::

    @register("knn", suffix=".skops")
    def knn(seed, n_neighbors=5):
        return KNeighborsClassifier(n_neighbors=n_neighbors)

A builder takes the seed and the classifier's options as plain keywords and
returns an unfitted scikit-learn style estimator (``fit`` returns ``self``,
``predict`` gives labels, ``get_params`` lists what a grid search may vary).
"""

import dataclasses
from typing import Callable

from classifiers.model_files import SUFFIX, save_skops
from plumbing.registry import Registry


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered classifier.

    name : str
    build : callable ``build(seed, **options) -> estimator``
    suffix : str, the model file's suffix (``.skops``, ``.keras``)
    save : callable ``save(fitted_estimator, path)``; writes atomically
    """

    name: str
    build: Callable
    suffix: str
    save: Callable


CLASSIFIERS = Registry("classifier")


def register(name, *, suffix=SUFFIX, save=save_skops):
    """Decorator: add ``build`` to the registry under ``name``."""

    def decorator(build):
        CLASSIFIERS.add(name, Entry(name, build, suffix, save))
        return build

    return decorator


def available():
    """Registered classifier names, sorted."""
    return CLASSIFIERS.names()


def get(name):
    """The :class:`Entry` for ``name``; an unknown name lists the valid ones."""
    return CLASSIFIERS.get(name)


def check_names(names):
    """Refuse the first unknown name in ``names`` before any work starts."""
    for name in names:
        get(name)
    return list(names)


def build(name, seed, **options):
    """An unfitted estimator for classifier ``name``, seeded with ``seed``."""
    return get(name).build(seed, **options)
