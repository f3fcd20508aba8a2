"""SHA-256 of a file, the fingerprint featpipe records for weights files and model files."""

import hashlib

_BLOCK = 1 << 22  # 4 MiB: a 528 MB weights file hashes without being held whole


def file_sha256(path):
    """SHA-256 of a file's bytes, read in blocks; hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
