"""featpipe's feature library: image store, backbones, extraction, feature files.

It knows nothing of DVC, click or params.yaml; the ``pipeline`` package does.
"""

from features.feature_store import load_features, read_metadata

__all__ = ["load_features", "read_metadata"]
