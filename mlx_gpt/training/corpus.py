"""The data of a run, read on every rank; and for a prepared corpus (--data DIR), the
checks made before the first step.

The ids must fit the model's vocabulary, and be those of the run's tokenizer; each
split must hold more than a block. Our corpora record their largest id in meta.json;
nanoGPT's and build-nanogpt's do not, so one pass finds it, and the run folder keeps
the answer (tokens/scan.json, written by the loop) for the next start.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

from mlx_gpt.config import TrainConfig
from mlx_gpt.data.layouts import Corpus, is_prepared, open_corpus, scan_max_id
from mlx_gpt.data.text import load_text, text_digest
from mlx_gpt.data.tokens import TOKENS_DIR, Splits
from mlx_gpt.distributed.ranks import Ranks, check_same_data
from mlx_gpt.errors import UserError
from mlx_gpt.model.gpt import GPTConfig
from mlx_gpt.runs.folder import RunFolder
from mlx_gpt.tokenizer import BPETokenizer, Tokenizer

SCAN_FILE = "scan.json"


def read_data(path: str | None, ranks: Ranks, chars: int | None = None) -> tuple[str | Corpus, str]:
    """The training text (its first `chars` characters, if given), or a prepared corpus
    (a folder), and its digest. Every rank reads its own copy: a rank that cannot, or
    whose copy differs, stops them all with a line that names its host."""
    data, digest, error = None, None, None
    try:
        if path is not None and not Path(path).exists():
            raise UserError(
                f"--data {path} does not exist; give a UTF-8 text file, or a folder that "
                f"`python -m mlx_gpt prepare` (or nanoGPT, or build-nanogpt) made"
            )
        if is_prepared(path):
            if chars is not None:
                raise UserError(
                    f"--data-chars cuts a text file, and {path} is a prepared corpus; "
                    f"prepare it with --max-tokens instead"
                )
            data = open_corpus(path)
            digest = data.digest
        else:
            data = load_text(path)[:chars]
            digest = text_digest(data)
    except UserError as e:
        if ranks.size == 1:
            raise
        error = str(e)
    check_same_data(ranks, digest, error)
    return data, digest


def corpus_splits(
    corpus: Corpus,
    tokenizer: Tokenizer | None,
    model: GPTConfig,
    cfg: TrainConfig,
    run: RunFolder,
    on_scan: Callable[[int, int], None] | None = None,
) -> tuple[Splits, dict | None]:
    """The corpus's splits, checked; and a new scan's result for the run folder, if one
    was made."""
    if tokenizer is not None and corpus.tokenizer is not None:
        if tokenizer.digest() != corpus.tokenizer.digest():
            raise UserError(
                f"--data {corpus.path} was tokenized with another tokenizer than this "
                f"run's; prepare it with --tokenizer-path pointing at the run's tokenizer"
            )
    scanned, max_id = None, corpus.max_id
    if max_id is None:
        max_id = read_scan(run.path, corpus.digest)
    if max_id is None:
        max_id = scan_max_id(corpus, on_scan)
        scanned = {"digest": corpus.digest, "max_id": max_id}
    # Ids in the model's padding (--vocab-multiple) are not tokens either.
    vocab = min(model.vocab_size, tokenizer.vocab_size if tokenizer else corpus.vocab_size)
    if max_id >= vocab:
        raise UserError(
            f"--data {corpus.path} holds token id {max_id:,}, but the run's vocabulary "
            f"has {vocab:,} tokens; prepare the data with this run's tokenizer"
        )
    corpus.splits.check_length(cfg.block_size)
    if corpus.splits.val_chars is None:
        warnings.warn(
            f"{corpus.path} ({corpus.layout}) does not say how many characters its splits "
            f"hold: the run logs no bits per character", stacklevel=2
        )  # fmt: skip
    return corpus.splits, scanned


def corpus_gpt2_tokenizer(path: str | None) -> BPETokenizer | None:
    """GPT-2's tokenizer for a corpus of GPT-2 ids that holds none, if it is at hand
    (--tokenizer-path, or the hub's cache). Training does not need it; without it
    the run saves none, and generating needs --tokenizer-path."""
    try:
        return BPETokenizer.gpt2(path)
    except UserError as e:
        if path:
            raise
        warnings.warn(
            f"training without a tokenizer ({e}); generate.py will need --tokenizer-path",
            stacklevel=2,
        )
        return None


def read_scan(folder: Path, digest: str) -> int | None:
    try:
        saved = json.loads((folder / TOKENS_DIR / SCAN_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved["max_id"] if saved.get("digest") == digest else None


def write_scan(folder: Path, scanned: dict) -> None:
    """Keep a scan's result; it only saves time, so a failed write is a warning."""
    try:
        (folder / TOKENS_DIR).mkdir(exist_ok=True)
        (folder / TOKENS_DIR / SCAN_FILE).write_text(json.dumps(scanned))
    except OSError as e:
        warnings.warn(
            f"could not keep the corpus check ({e}); the next start scans again", stacklevel=2
        )
