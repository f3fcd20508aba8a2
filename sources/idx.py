"""Read IDX files, the format of MNIST and Fashion-MNIST, in a few lines of NumPy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian uint32 per dimension, then the values in C
order. Only unsigned bytes (type 0x08) occur in these sets.
"""

import gzip
import zlib
from pathlib import Path

import numpy as np

from plumbing.errors import FeatpipeError

UNSIGNED_BYTE = 0x08


def idx_magic(ndim):
    """The magic number of an IDX file of unsigned bytes with ``ndim`` dimensions."""
    return (UNSIGNED_BYTE << 8) | ndim


def read_idx(path, ndim):
    """Read a (possibly gzipped) IDX file of unsigned bytes.

    Parameters
    ----------
    path : path-like
        ``*.gz`` files are decompressed on the fly.
    ndim : int
        Dimensions the file must have: 3 for images, 1 for labels.

    Returns
    -------
    ndarray of uint8, of the shape the header gives.
    """
    path = Path(path)
    raw = _read_bytes(path)
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise FeatpipeError(f"{path}: {len(raw)} bytes, too short for an IDX header of {header_size} bytes")
    magic = int.from_bytes(raw[:4], "big")
    if magic != idx_magic(ndim):
        raise FeatpipeError(
            f"{path}: magic number {magic:#010x}, expected {idx_magic(ndim):#010x} "
            f"(IDX, unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); is it the right file?"
        )
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape))
    found = len(raw) - header_size
    if found != expected:
        state = "truncated" if found < expected else "longer than its header says"
        raise FeatpipeError(f"{path}: {state}: {found} data bytes, expected {expected} for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def _read_bytes(path):
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise FeatpipeError(f"{path}: not a complete gzip file ({error}); download it again") from None
