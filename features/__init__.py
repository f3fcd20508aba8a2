"""CNN features: the image store, the backbones, the extraction engine and its I/O, the feature files, Dask.

It knows nothing of DVC, click or params.yaml; the ``pipeline`` package does.
"""

from features.feature_store import load_features, read_metadata

__all__ = ["load_features", "read_metadata"]
