"""HellaSwag, scored exactly as build-nanogpt's hellaswag.py scores it.

Each example is a context and 4 endings, one right (`label`). Each ending, encoded
with a leading space, follows the context's tokens; the model's cross-entropy over
the ending's tokens (the shifted logits, as the loss takes them) scores it, and the
pick is the ending with

    acc_norm  the lowest mean loss per token: the figure build-nanogpt reports
              (GPT-2 124M: 0.2955)
    acc       the lowest summed loss

Neither is the Eleuther harness's acc_norm, which normalises the summed loss by the
ending's length in characters (and cleans the text first) and gives GPT-2 124M 0.3114.
acc_norm_chars here normalises by characters as it does (the ending's own characters,
not the space that joins it to the context: lm_eval's completion_len), on the text as
it is: its rule, not its figure.

Examples go through the model several at a time (4 rows each), padded to the longest
row, the padding masked out; a row longer than the model's block loses its oldest
context tokens. With several ranks each scores every size-th example and the counts
are summed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlx_gpt.errors import UserError

SOURCE = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


@dataclass
class Example:
    ctx: str
    endings: list[str]
    label: int


@dataclass
class HellaSwagResult:
    acc: float
    acc_norm: float
    acc_norm_chars: float
    examples: int
    examples_per_sec: float
    predictions: list[int]  # acc_norm's pick per example (this rank's, in order)


def read_examples(path: str | Path, limit: int | None = None) -> list[Example]:
    """hellaswag_val.jsonl's lines (ctx, endings, label); a bad line is named."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; download hellaswag_val.jsonl from {SOURCE}")
    examples = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(examples) >= limit:
                break
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                example = Example(d["ctx"], list(d["endings"]), int(d["label"]))
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path} line {number} is not a HellaSwag example") from None
            if len(example.endings) != 4 or not 0 <= example.label < 4:
                raise UserError(f"{path} line {number} needs 4 endings and a label 0 to 3")
            examples.append(example)
    if not examples:
        raise UserError(f"{path} holds no examples")
    return examples


def render(tokenizer, example: Example) -> tuple[list[list[int]], list[int]]:
    """The 4 rows (context + ending tokens) and where each ending starts."""
    ctx = tokenizer.encode(example.ctx)
    rows = [ctx + tokenizer.encode(" " + end) for end in example.endings]
    return rows, [len(ctx)] * 4


def score(
    model: nn.Module,
    tokenizer,
    examples: list[Example],
    batch_examples: int = 8,
    rank: int = 0,
    size: int = 1,
    on_batch: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Counts [correct by sum, by mean, by chars, examples] over this rank's examples,
    and this rank's acc_norm picks."""
    if tokenizer.kind == "char":
        raise UserError("HellaSwag needs a BPE or GPT-2 tokenizer; a char run cannot encode it")
    mine = examples[rank::size]
    counts, picks = np.zeros(4, dtype=np.int64), []
    block = model.config.block_size
    for first in range(0, len(mine), batch_examples):
        batch = mine[first : first + batch_examples]
        tokens, mask = _pack(tokenizer, batch, block)
        logits = model(mx.array(tokens)).astype(mx.float32)  # (4B, T, vocab)
        losses = nn.losses.cross_entropy(logits[:, :-1], mx.array(tokens[:, 1:]))  # (4B, T-1)
        shift_mask = mx.array(mask[:, 1:])
        sums = (losses * shift_mask).sum(axis=1).reshape(-1, 4)
        means = sums / shift_mask.sum(axis=1).reshape(-1, 4)
        # The harness divides by len(choice), the ending without the space before it.
        chars = mx.array([[len(e) for e in ex.endings] for ex in batch], dtype=mx.float32)
        by_sum, by_mean = np.array(sums.argmin(axis=1)), np.array(means.argmin(axis=1))
        by_chars = np.array((sums / chars).argmin(axis=1))
        labels = np.array([ex.label for ex in batch])
        counts += [(by_sum == labels).sum(), (by_mean == labels).sum(),
                   (by_chars == labels).sum(), len(batch)]  # fmt: skip
        picks += by_mean.tolist()
        if on_batch:
            on_batch(min(first + batch_examples, len(mine)), len(mine))
    return counts, picks


def evaluate(model, tokenizer, examples, ranks=None, batch_examples: int = 8, on_batch=None):
    """acc, acc_norm (build-nanogpt's) and acc_norm_chars (Eleuther's) over `examples`."""
    from mlx_gpt.distributed.ranks import Ranks

    ranks = ranks or Ranks()
    training = model.training
    model.eval()
    start = time.perf_counter()
    try:
        counts, picks = score(model, tokenizer, examples, batch_examples, ranks.rank,
                              ranks.size, on_batch)  # fmt: skip
    finally:
        model.train(training)
    if ranks.size > 1:
        counts = np.array(ranks.run(lambda: ranks.all_sum(mx.array(counts))).tolist())
    seconds = time.perf_counter() - start
    n = int(counts[3])
    return HellaSwagResult(
        counts[0] / n, counts[1] / n, counts[2] / n, n, n / seconds if seconds else 0.0, picks
    )


def _pack(tokenizer, batch: list[Example], block: int) -> tuple[np.ndarray, np.ndarray]:
    """(4B, T) tokens and the ending mask, rows padded with 0 to the longest."""
    rows, masks = [], []
    for example in batch:
        for row, ctx_len in zip(*render(tokenizer, example), strict=True):
            mask = [0] * ctx_len + [1] * (len(row) - ctx_len)
            rows.append(row[-block:])
            masks.append(mask[-block:])
    width = max(len(r) for r in rows)
    tokens = np.zeros((len(rows), width), dtype=np.int32)
    mask = np.zeros((len(rows), width), dtype=np.float32)
    for i, (row, m) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(row)], mask[i, : len(m)] = row, m
    return tokens, mask
