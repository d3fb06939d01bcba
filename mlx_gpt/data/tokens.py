"""Token ids, from the arrays or memory maps that hold them to the batches of a step.

A split is `Tokens`: one or more shards read as one stream of windows, so that a
corpus far larger than memory (np.memmap shards, see layouts.py) and tiny Shakespeare
tokenized in memory are drawn from by the same code, and with the same draws.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import mlx.core as mx
import numpy as np

from mlx_gpt.data.text import split_text
from mlx_gpt.errors import UserError

TOKEN_DTYPE = np.uint16  # every vocabulary up to 65,535 tokens (GPT-2's 50,257 too)
TOKENS_DIR = "tokens"  # the run folder's cache of the tokenized splits


class Tokens:
    """One split's token ids, held in shards (numpy arrays or memory maps)."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = list(shards)
        self.sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self._files: dict[int, BinaryIO] = {}  # shard index -> its file, opened on first read

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def windows(self, count: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """`count` random windows of `length` tokens, each inside one shard, as int32.

        A window starts at any of a shard's len - length + 1 places, all shards' places
        counted as one range: with one shard this is nanoGPT's get_batch draw,
        rng.integers(0, len(data) - block_size). The rows are copies, so nothing keeps
        a memory map alive."""
        places = np.maximum(self.sizes - length + 1, 0)
        ends = np.cumsum(places)
        starts = rng.integers(0, ends[-1], size=count)
        shard = np.searchsorted(ends, starts, side="right")
        offset = starts - (ends[shard] - places[shard])
        rows = [self._row(s, o, length) for s, o in zip(shard, offset, strict=True)]
        return np.stack(rows).astype(np.int32)  # (count, length)

    def _row(self, shard: int, offset: int, length: int) -> np.ndarray:
        """`length` tokens of a shard from `offset`. A memory-mapped shard is read with
        pread, not through its map: every page read through a map counts in this
        process's resident memory (what Activity Monitor and top show) until the OS
        evicts it, so a long run's RSS would climb toward the corpus's size. Read with
        pread, the pages stay in the OS's file cache and nothing here grows (nanoGPT
        opens its memmap afresh each batch for the same reason)."""
        data = self.shards[shard]
        if not isinstance(data, np.memmap):
            return data[offset : offset + length]
        if shard not in self._files:
            self._files[shard] = open(data.filename, "rb", buffering=0)  # noqa: SIM115
        size = data.dtype.itemsize
        where = data.offset + int(offset) * size
        raw = os.pread(self._files[shard].fileno(), length * size, where)
        return np.frombuffer(raw, dtype=data.dtype)

    def concatenated(self) -> np.ndarray:
        return self.shards[0] if len(self.shards) == 1 else np.concatenate(self.shards)


def get_batch(
    data: Tokens, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[mx.array, mx.array]:
    """Random windows of block_size tokens, and the same windows shifted by one."""
    rows = data.windows(batch_size, block_size + 1, rng)  # (B, T + 1)
    return mx.array(rows[:, :-1]), mx.array(rows[:, 1:])


@dataclass
class Splits:
    train: Tokens
    val: Tokens
    # The characters the tokens spell, which bits per character need; None when the
    # corpus does not say (a folder nanoGPT or build-nanogpt prepared).
    train_chars: int | None
    val_chars: int | None

    @classmethod
    def from_text(cls, text: str, tokenizer, block_size: int) -> Splits:
        """Tokenize each split; both must hold more than a block."""
        parts = split_text(text)
        ids = [np.array(tokenizer.encode(part), dtype=TOKEN_DTYPE) for part in parts]
        splits = cls(Tokens([ids[0]]), Tokens([ids[1]]), len(parts[0]), len(parts[1]))
        splits.check_length(block_size, "characters" if tokenizer.kind == "char" else "tokens")
        return splits

    def check_length(self, block_size: int, unit: str = "tokens") -> None:
        for name in ("train", "val"):
            n = len(getattr(self, name))
            if n <= block_size:
                raise UserError(
                    f"the {name} split has {n} {unit}, too few for --block-size "
                    f"{block_size}; use a longer text or a smaller --block-size"
                )

    def bits_per_char(self, split: str, mean_loss: float) -> float | None:
        """Mean loss per token (nats) -> bits per character of the split: the split's
        total nats (mean x tokens) over its characters, in bits. For a char tokenizer
        tokens = characters, and this is mean_loss / ln 2. None if the characters are
        not known."""
        tokens, chars = len(getattr(self, split)), getattr(self, f"{split}_chars")
        if not chars:
            return None
        return mean_loss * tokens / chars / math.log(2)

    def chars_per_token(self) -> float | None:
        return self.train_chars / len(self.train) if self.train_chars else None

    def save(self, folder: str | Path, key: dict) -> None:
        """Cache the tokens in folder/tokens/ (train.npy, val.npy, meta.json). `key` says
        what they were made from (the text's and the tokenizer's digests). The cache only
        saves time: a write that fails (disk full) leaves none, with a warning."""
        d = Path(folder, TOKENS_DIR)
        shutil.rmtree(d, ignore_errors=True)
        meta = {**key, "train_chars": self.train_chars, "val_chars": self.val_chars}
        try:
            d.mkdir()
            np.save(d / "train.npy", self.train.concatenated())
            np.save(d / "val.npy", self.val.concatenated())
            (d / "meta.json").write_text(json.dumps(meta))  # written last, it marks the cache whole
        except OSError as e:
            shutil.rmtree(d, ignore_errors=True)
            warnings.warn(
                f"no token cache in {d} ({e}); a resume will tokenize again", stacklevel=2
            )

    @classmethod
    def load(cls, folder: str | Path, key: dict) -> Splits | None:
        """The cached tokens, if made from the same `key`; None otherwise (or damaged)."""
        d = Path(folder, TOKENS_DIR)
        try:
            meta = json.loads((d / "meta.json").read_text())
            if any(meta.get(k) != v for k, v in key.items()):
                return None
            train, val = np.load(d / "train.npy"), np.load(d / "val.npy")
        except (OSError, ValueError):
            return None
        return cls(Tokens([train]), Tokens([val]), meta["train_chars"], meta["val_chars"])
