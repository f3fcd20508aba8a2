"""The registry of image sources: a name maps to the function that loads it.

Adding a source is one decorated function; nothing else needs to learn its name.
"""

from plumbing.registry import Registry

SOURCES = Registry("source")


def register_source(name):
    """Add the decorated ``loader(path, settings) -> Dataset`` under ``name``."""

    def add(loader):
        return SOURCES.add(name, loader)

    return add


def list_sources():
    """The registered source names, sorted."""
    return SOURCES.names()


def get_source(name):
    """The loader registered as ``name``; an unknown name lists the known ones."""
    return SOURCES.get(name)
