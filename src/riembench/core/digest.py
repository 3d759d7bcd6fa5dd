"""Content digests of files: which weights a number was computed from, beyond their path, and
whether a copy is the file a library lists."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib`` algorithm name), read in 1 MiB blocks
    (weights files are large)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
