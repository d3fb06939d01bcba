"""A write that survives a crash or a power cut: fsync of a file or of a folder (after a
rename into it). It imports only `os`, so that bench/torch_train.py, which must not load
MLX, can load this file by its path and write its checkpoints the same way."""

from __future__ import annotations

import os
from pathlib import Path


def fsync(path: str | Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
