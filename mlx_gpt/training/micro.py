"""--micro-batch N|auto: the micro-batch that fits the machine, and the accumulation
steps that follow from it.

--batch-size stays the global batch, the sequences behind one optimizer step, so the
losses are those of the same run with an explicit --grad-accum. N sets the micro-batch;
auto measures. It runs one trial step (undone: no weight changes) for each power of two
that divides the batch, smallest first, with MLX's own peak-memory counter, and keeps
the largest whose first step stays under the budget (--max-memory). Smallest first,
because a trial far over the budget could make a Mac swap, or its allocator abort.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import mlx.core as mx
import numpy as np

from mlx_gpt.config import TrainConfig
from mlx_gpt.data.tokens import Splits, get_batch
from mlx_gpt.distributed.ranks import Ranks
from mlx_gpt.errors import UserError
from mlx_gpt.training import guards
from mlx_gpt.training.step import build_step, micro_batch_size, trial_step


@dataclass
class MicroBatch:
    """What --micro-batch auto chose, for the banner."""

    size: int  # sequences per micro-batch
    grad_accum: int
    peak: int  # bytes, the first step's
    budget: int

    def line(self, block_size: int) -> str:
        return (
            f"micro-batch {self.size} x {block_size} (accumulate {self.grad_accum}): "
            f"{guards.size_text(self.peak)} of {guards.size_text(self.budget)}"
        )


def with_micro_batch(cfg: TrainConfig, ranks: Ranks) -> TrainConfig:
    """cfg with the --grad-accum that --micro-batch N implies (auto: left to choose())."""
    if cfg.micro_batch is None or cfg.micro_batch == "auto":
        micro_batch_size(cfg.batch_size, cfg.grad_accum, ranks.size)  # checks --grad-accum
        return cfg
    size, share = int(cfg.micro_batch), ranks.size
    if cfg.batch_size % (share * size):
        raise UserError(
            f"--batch-size {cfg.batch_size} does not divide into {share} rank(s) x "
            f"micro-batches of {size}; choose a --micro-batch that divides "
            f"{cfg.batch_size // share if cfg.batch_size % share == 0 else cfg.batch_size}"
        )
    return replace(cfg, grad_accum=cfg.batch_size // (share * size))


def sizes(cfg: TrainConfig, ranks: Ranks) -> list[int]:
    """The power-of-two micro-batches that divide a rank's share of the batch."""
    share = cfg.batch_size // ranks.size
    return [2**k for k in range(share.bit_length()) if share % 2**k == 0]


def measure(model, optimizer, cfg: TrainConfig, ranks: Ranks, splits: Splits, size: int) -> int:
    """The peak memory (bytes) of one step with micro-batches of `size`, undone. With
    several ranks, the largest peak of any rank, so that every rank chooses alike."""
    trial = replace(cfg, grad_accum=cfg.batch_size // (ranks.size * size))
    step = build_step(model, optimizer, trial, ranks)
    rng = np.random.default_rng([cfg.seed, 3])  # the training batches' draws are untouched
    x, y = get_batch(splits.train, cfg.batch_size, cfg.block_size, rng)
    mx.clear_cache()
    mx.reset_peak_memory()
    with guards.working_set():
        trial_step(step, model, optimizer, x, y)
    peak = max(ranks.gather_json(mx.get_peak_memory()))
    mx.clear_cache()
    return peak


def choose(model, optimizer, cfg: TrainConfig, ranks: Ranks, splits: Splits) -> MicroBatch:
    """--micro-batch auto: the largest power-of-two micro-batch whose trial step fits."""
    budget = guards.memory_budget(cfg.max_memory)
    fits, smallest = None, None
    for size in sizes(cfg, ranks):
        peak = measure(model, optimizer, cfg, ranks, splits, size)
        smallest = peak if smallest is None else smallest
        if peak > budget:
            break
        fits = MicroBatch(size, cfg.batch_size // (ranks.size * size), peak, budget)
    if fits is None:
        raise UserError(
            f"no micro-batch fits: one sequence's step peaked at {guards.size_text(smallest)}, "
            f"over the budget of {guards.size_text(budget)} (--max-memory); try "
            f"--activation-checkpointing, --dtype bfloat16 or a shorter --block-size"
        )
    return fits
