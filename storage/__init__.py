"""Storage: the files featpipe writes and reads, and how it moves their bytes.

The image store (``image_store.py``), the feature files (``feature_store.py``),
the parallel chunk codec both use (``chunkio.py``), and reading batches ahead
of their consumer (``streaming.py``). Their layouts are public: data/README.md.

It knows nothing of Keras, DVC or the sources that fill it.

>>> from storage import load_features
>>> train = load_features("data/features/vgg16-fc2.h5", split="train")
"""

from storage.feature_store import load_features, read_metadata

__all__ = ["load_features", "read_metadata"]
