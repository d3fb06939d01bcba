"""A UTF-8 corpus in one file: reading it, recognising it, and gpt.py's train/val cut."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

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


def split_text(text: str) -> tuple[str, str]:
    """First 90 % train, last 10 % val, as gpt.py splits, cut in the text before
    tokenizing: val is the same characters for every tokenizer."""
    n = int(0.9 * len(text))
    return text[:n], text[n:]
