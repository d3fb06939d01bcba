"""Text in, batches out: loading a UTF-8 corpus, the train/val splits, their token cache."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlx_gpt.errors import UserError

SHAKESPEARE = "tinyshakespeare.txt"


def load_text(path: str | Path | None = None, flag: str = "--data") -> str:
    """The corpus: a UTF-8 file, or (path None) the tiny Shakespeare shipped with us.
    `flag` names the option the path came from, for the error message."""
    if path is None:
        return resources.files("mlx_gpt").joinpath("assets", SHAKESPEARE).read_text("utf-8")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{flag} {p} does not exist; give the path of a UTF-8 text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{flag} {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text:
        raise UserError(f"{flag} {p} is empty; give a file with some text in it")
    return text


def text_digest(text: str) -> str:
    """The sha256 of a text's UTF-8 bytes: how a run recognises its data and tokenizer."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


TOKEN_DTYPE = np.uint16  # every vocabulary up to 65,535 tokens (GPT-2's 50,257 too)
TOKENS_DIR = "tokens"  # the run folder's cache of the tokenized splits


def split_text(text: str) -> tuple[str, str]:
    """First 90 % train, last 10 % val, as gpt.py splits, cut in the text before
    tokenizing: val is the same characters for every tokenizer."""
    n = int(0.9 * len(text))
    return text[:n], text[n:]


@dataclass
class Splits:
    train: np.ndarray  # token ids, TOKEN_DTYPE
    val: np.ndarray
    train_chars: int  # the characters the tokens spell, which bits per character need
    val_chars: int

    @classmethod
    def from_text(cls, text: str, tokenizer, block_size: int) -> Splits:
        """Tokenize each split; both must hold more than a block."""
        parts = split_text(text)
        ids = [np.array(tokenizer.encode(part), dtype=TOKEN_DTYPE) for part in parts]
        splits = cls(ids[0], ids[1], len(parts[0]), len(parts[1]))
        unit = "characters" if tokenizer.kind == "char" else "tokens"
        for name, part in (("train", splits.train), ("val", splits.val)):
            if len(part) <= block_size:
                raise UserError(
                    f"the {name} split has {len(part)} {unit}, too few for "
                    f"--block-size {block_size}; use a longer text or a smaller --block-size"
                )
        return splits

    def bits_per_char(self, split: str, mean_loss: float) -> float:
        """Mean loss per token (nats) -> bits per character of the split: the split's
        total nats (mean x tokens) over its characters, in bits. For a char tokenizer
        tokens = characters, and this is mean_loss / ln 2."""
        tokens, chars = len(getattr(self, split)), getattr(self, f"{split}_chars")
        return mean_loss * tokens / chars / math.log(2)

    def save(self, folder: str | Path, key: dict) -> None:
        """Cache the tokens in folder/tokens/ (train.npy, val.npy, meta.json). `key` says
        what they were made from (the text's and the tokenizer's digests). The cache only
        saves time: a write that fails (disk full) leaves none, with a warning."""
        d = Path(folder, TOKENS_DIR)
        shutil.rmtree(d, ignore_errors=True)
        meta = {**key, "train_chars": self.train_chars, "val_chars": self.val_chars}
        try:
            d.mkdir()
            np.save(d / "train.npy", self.train)
            np.save(d / "val.npy", self.val)
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
        return cls(train, val, meta["train_chars"], meta["val_chars"])


def get_batch(
    data: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[mx.array, mx.array]:
    """Random windows of block_size tokens, and the same windows shifted by one."""
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    idx = starts[:, None] + np.arange(block_size)  # (B, T)
    x, y = data[idx].astype(np.int32), data[idx + 1].astype(np.int32)
    return mx.array(x), mx.array(y)
