"""A registry of image sources: a name maps to the function that loads it.

Adding a source is one decorated function (timm's ``_registry.py`` pattern);
nothing else needs to learn its name.
"""

from features.errors import FeatpipeError

_LOADERS = {}


def register_source(name):
    """Add the decorated ``loader(path, settings) -> Dataset`` under ``name``."""

    def add(loader):
        if name in _LOADERS:
            raise ValueError(f"source {name!r} is registered twice")
        _LOADERS[name] = loader
        return loader

    return add


def list_sources():
    """The registered source names, sorted."""
    return sorted(_LOADERS)


def get_source(name):
    """The loader registered as ``name``; an unknown name lists the known ones."""
    try:
        return _LOADERS[name]
    except KeyError:
        raise FeatpipeError(f"unknown source {name!r}; expected one of: {', '.join(list_sources())}") from None
