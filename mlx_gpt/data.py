"""Text in, batches out: loading a UTF-8 corpus, the character tokenizer, the splits."""

from __future__ import annotations

import json
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


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of the corpus's characters."""

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        try:
            return [self.stoi[c] for c in s]
        except KeyError as e:
            raise UserError(f"character {e.args[0]!r} is not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"chars": self.chars}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["chars"])


@dataclass
class Splits:
    train: np.ndarray
    val: np.ndarray

    @classmethod
    def from_text(cls, text: str, tokenizer: CharTokenizer, block_size: int) -> Splits:
        """First 90 % train, last 10 % val, as gpt.py splits; both must hold a block."""
        ids = np.array(tokenizer.encode(text), dtype=np.int32)
        n = int(0.9 * len(ids))
        splits = cls(train=ids[:n], val=ids[n:])
        for name, part in (("train", splits.train), ("val", splits.val)):
            if len(part) <= block_size:
                raise UserError(
                    f"the {name} split has {len(part)} characters, too few for "
                    f"--block-size {block_size}; use a longer text or a smaller --block-size"
                )
        return splits


def get_batch(
    data: np.ndarray, batch_size: int, block_size: int, rng: np.random.Generator
) -> tuple[mx.array, mx.array]:
    """Random windows of block_size characters, and the same windows shifted by one."""
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    idx = starts[:, None] + np.arange(block_size)  # (B, T)
    return mx.array(data[idx]), mx.array(data[idx + 1])
