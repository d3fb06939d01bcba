"""The tokenizer of a prepared corpus, and documents -> ids in batches.

The same three kinds as train.py (tokenizer.py). A single text file gets the tokenizer
a run on that file would make (char: its characters; bpe: merges learned on its train
split), so that both runs see the same ids. A corpus of many documents gets them from
a sample, its first --tokenizer-sample characters, and an end-of-text token that
separates the documents (GPT-2's <|endoftext|>; a char vocabulary has none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlx_gpt.data.text import load_text, split_text
from mlx_gpt.errors import UserError
from mlx_gpt.tokenizer import (
    CHAR_FILE,
    HF_FILE,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
)

EOT = "<|endoftext|>"


def make_tokenizer(cfg, source, out: Path, *, resumed: bool) -> Tokenizer:
    """The corpus's tokenizer, saved in `out`; a resumed prepare reads back its own."""
    if resumed:
        return load_tokenizer(out, cfg.tokenizer)
    if cfg.tokenizer == "gpt2":
        tokenizer = BPETokenizer.gpt2(cfg.tokenizer_path)
    elif cfg.tokenizer == "bpe" and cfg.tokenizer_path:
        tokenizer = _existing_bpe(cfg.tokenizer_path)
    elif source.single_text:
        text = load_text(source.files[0], flag="SOURCE")
        if cfg.tokenizer == "char":
            tokenizer = CharTokenizer.from_text(text)
        else:
            tokenizer = BPETokenizer.train(
                split_text(text)[0][: cfg.tokenizer_sample], cfg.vocab_size
            )
    else:
        sample = _sample(source, cfg.tokenizer_sample)
        if cfg.tokenizer == "char":
            tokenizer = CharTokenizer.from_text("".join(sample))
        else:
            tokenizer = BPETokenizer.train(sample, cfg.vocab_size, special_tokens=[EOT])
    tokenizer.save(out)
    return tokenizer


class Encoder:
    """Documents -> arrays of ids, each led by the end-of-text id if `separate`."""

    def __init__(self, tokenizer: Tokenizer, separate: bool):
        self.tokenizer = tokenizer
        self.eot = None
        if separate and isinstance(tokenizer, BPETokenizer):
            self.eot = tokenizer.hf.token_to_id(EOT)
            if self.eot is None:
                raise UserError(f"the tokenizer has no {EOT} token to separate documents with")
        if isinstance(tokenizer, CharTokenizer):
            codes = np.array([ord(c) for c in tokenizer.chars])
            self._lut = np.full(codes.max() + 1, -1, dtype=np.int64)
            self._lut[codes] = np.arange(len(codes))

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if not texts:
            return []
        if isinstance(self.tokenizer, CharTokenizer):
            return [self._chars(t) for t in texts]
        hf = self.tokenizer.hf
        encode = getattr(hf, "encode_batch_fast", hf.encode_batch)  # no offsets: faster
        lead = [self.eot] if self.eot is not None else []
        return [
            np.array(lead + e.ids, dtype=np.int64) for e in encode(texts, add_special_tokens=False)
        ]

    def _chars(self, text: str) -> np.ndarray:
        """A text's ids through a table indexed by code point: no Python loop."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = self._lut[np.minimum(codes, len(self._lut) - 1)]
        unknown = (ids < 0) | (codes >= len(self._lut))
        if unknown.any():
            char = chr(int(codes[np.argmax(unknown)]))
            raise UserError(
                f"character {char!r} is not in the vocabulary drawn from the first "
                f"--tokenizer-sample characters; raise --tokenizer-sample"
            )
        return ids


def _sample(source, chars: int) -> list[str]:
    """The first documents, up to `chars` characters (the last one cut)."""
    sample, size = [], 0
    for text, _ in source.documents():
        sample.append(text[: chars - size])
        size += len(sample[-1])
        if size >= chars:
            break
    return sample


def _existing_bpe(path: str) -> BPETokenizer:
    """A BPE another run or prepare made: a tokenizer.json, or a folder holding one."""
    p = Path(path)
    file = p / HF_FILE if p.is_dir() else p
    if not file.is_file():
        raise UserError(f"--tokenizer-path {path} is not a {HF_FILE} (nor a folder with one)")
    return BPETokenizer.load(file, "bpe")


TOKENIZER_FILES = (HF_FILE, CHAR_FILE)
