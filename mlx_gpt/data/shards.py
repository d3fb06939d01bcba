"""Token shards on disk: each written under a temporary name and renamed when whole.

A shard is raw token ids (`dtype`, no header: nanoGPT's .bin format), SPLIT_NNNNNN.bin.
Only a renamed shard counts, so a prepare killed midway leaves complete shards and at
most one .tmp file, which the next run writes again from its start.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def write_json(path: Path, value, indent: int | None = 1) -> None:
    """A JSON file written whole or not at all (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=indent, ensure_ascii=False))
    os.replace(tmp, path)


class ShardWriter:
    """Fills the shards of one split, `shard_tokens` ids each (the last may be shorter).

    `add` appends ids; after each shard is renamed, `on_shard()` is called, so that
    the caller can record how far the source has been read. `shards` lists the whole
    ones: file, tokens, sha256."""

    def __init__(self, folder: Path, split: str, shard_tokens: int, dtype, shards: list[dict]):
        self.folder, self.split, self.shard_tokens = folder, split, shard_tokens
        self.dtype = np.dtype(dtype)
        self.shards = list(shards)  # the ones already whole (a resumed prepare's)
        self.tokens = sum(s["tokens"] for s in self.shards)
        self.max_id = max((s["max_id"] for s in self.shards), default=0)
        self._file = None  # the open .tmp of the shard being filled
        self._filled = 0
        self._sha = hashlib.sha256()
        self._shard_max = 0

    @property
    def written(self) -> int:
        """Ids written so far, the shard being filled included."""
        return self.tokens + self._filled

    def add(self, ids: np.ndarray, on_shard) -> None:
        """Append `ids`; on_shard(taken) after each shard completes, where `taken` is how
        many of these ids it holds."""
        taken = 0
        while taken < len(ids):
            if self._file is None:
                self._open()
            part = ids[taken : taken + self.shard_tokens - self._filled].astype(self.dtype)
            self._write(part)
            taken += len(part)
            if self._filled == self.shard_tokens:
                self.finish()
                on_shard(taken)

    def finish(self) -> None:
        """Close and rename the shard being filled, if it holds anything."""
        if self._file is None:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = self._name(len(self.shards))
        os.replace(self.folder / (name + ".tmp"), self.folder / name)
        self.shards.append(
            {"file": name, "tokens": self._filled, "sha256": self._sha.hexdigest(),
             "max_id": self._shard_max}
        )  # fmt: skip
        self.tokens += self._filled
        self.max_id = max(self.max_id, self._shard_max)
        self._file, self._filled, self._sha, self._shard_max = None, 0, hashlib.sha256(), 0

    def discard(self) -> None:
        """Drop the shard being filled (a failed write): the whole ones stay."""
        if self._file is not None:
            try:
                self._file.close()  # flushes what is buffered, which may fail again
            except OSError:
                pass
            (self.folder / (self._name(len(self.shards)) + ".tmp")).unlink(missing_ok=True)
            self._file = None

    def _open(self) -> None:
        self._file = open(self.folder / (self._name(len(self.shards)) + ".tmp"), "wb")
        self._filled, self._sha, self._shard_max = 0, hashlib.sha256(), 0

    def _write(self, part: np.ndarray) -> None:
        data = part.tobytes()
        self._file.write(data)
        self._sha.update(data)
        self._filled += len(part)
        self._shard_max = max(self._shard_max, int(part.max()))

    def _name(self, index: int) -> str:
        return f"{self.split}_{index:06d}.bin"
