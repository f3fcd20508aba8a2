"""CNN features: the backbones, their preprocessing and weights, the extraction engine, Dask extraction.

It knows nothing of DVC, click or params.yaml; the ``pipeline`` package does.
The feature files it writes are read with :func:`load_features` (from
``storage``, offered here too because analysts import it from ``features``).
"""

from storage.feature_store import load_features, read_metadata

__all__ = ["load_features", "read_metadata"]
