"""One registry type for featpipe's interchangeable parts: backbones, classifiers, image sources.

timm's ``_registry.py`` pattern: each part is added under a name by a
decorator in its own module; :meth:`Registry.names` lists them sorted, and an
unknown name is a :class:`~plumbing.errors.FeatpipeError` that lists the
known ones, so adding a part is one entry, not an edit in five places.
"""

from plumbing.errors import FeatpipeError


class Registry:
    """Names mapped to entries of one kind.

    Parameters
    ----------
    kind : str
        What the entries are, for messages: ``"backbone"``, ``"classifier"``...
    alternatives : str
        Appended to the list of names when a name is unknown, e.g.
        ``"or a path to a .keras model file"``.
    """

    def __init__(self, kind, alternatives=""):
        self.kind = kind
        self.alternatives = alternatives
        self._entries = {}

    def add(self, name, entry):
        """Register ``entry`` under ``name``; a name registered twice is a programming error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def names(self):
        """The registered names, sorted."""
        return sorted(self._entries)

    def get(self, name):
        """The entry called ``name``; an unknown name lists the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) + (f", {self.alternatives}" if self.alternatives else "")
            raise FeatpipeError(f"unknown {self.kind} {name!r}; expected one of: {known}") from None

    def __contains__(self, name):
        return name in self._entries
