"""--micro-batch N|auto: the micro-batch that fits the machine, and the accumulation
steps that follow from it.

--batch-size stays the global batch, the sequences behind one optimizer step, so the
losses are those of the same run with an explicit --grad-accum. N sets the micro-batch;
auto measures. It runs one trial step (undone: no weight changes) for each power of two
that divides the batch, smallest first, with MLX's own peak-memory counter, and keeps
the largest whose first step stays under the budget (--max-memory). No allocation fails
at MLX's memory limit (on a Mac GPU, past it the machine swaps, and past RAM MLX aborts
the process), so a trial too big must never run: a step's peak grows as a fixed part
plus a part per sequence, and each next size is predicted from the peaks measured so
far. The search stops before the first size predicted over the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import mlx.core as mx
import numpy as np

from mlx_gpt.config import TrainConfig
from mlx_gpt.data.tokens import Splits, get_batch
from mlx_gpt.distributed.ranks import Ranks
from mlx_gpt.errors import UserError
from mlx_gpt.training import guards
from mlx_gpt.training.step import build_step, micro_batch_size, trial_step


@dataclass(frozen=True)
class Trial:
    """One size auto looked at: its peak (bytes), measured or predicted."""

    size: int
    peak: int
    predicted: bool = False


@dataclass
class MicroBatch:
    """What --micro-batch auto chose, for the banner."""

    size: int  # sequences per micro-batch
    grad_accum: int
    peak: int  # bytes, the first step's
    budget: int
    trials: list[Trial] = field(default_factory=list)

    def line(self, block_size: int) -> str:
        return (
            f"micro-batch {self.size} x {block_size} (accumulate {self.grad_accum}): "
            f"{guards.size_text(self.peak)} of {guards.size_text(self.budget)}"
        )

    def trials_line(self) -> str:
        """Every size looked at, with its peak, and the choice: `micro-batch auto:
        1 → 2.48 GB, 2 → 3.22 GB, 4 → 7.69 GB (predicted, over 6.40 GB); chose 2`."""
        return f"micro-batch auto: {trials_text(self.trials, self.budget)}; chose {self.size}"


def trials_text(trials: list[Trial], budget: int) -> str:
    def one(t: Trial) -> str:
        over = f"over {guards.size_text(budget)}" if t.peak > budget else ""
        note = ", ".join(w for w in ("predicted" if t.predicted else "", over) if w)
        return f"{t.size} → {guards.size_text(t.peak)}" + (f" ({note})" if note else "")

    return ", ".join(one(t) for t in trials)


def predict(measured: list[Trial], size: int, resident: int = 0) -> int:
    """The peak of a step with micro-batches of `size`, from the measured ones. Peaks grow
    as fixed + per-sequence x size: through the last two measured, that line. From one,
    the line through it and `resident`, the memory held before any step (weights and
    AdamW's moments): the steepest the line can be, so the prediction is never under."""
    last = measured[-1]
    if len(measured) == 1:
        per_sequence = (last.peak - resident) / last.size
    else:
        before = measured[-2]
        per_sequence = (last.peak - before.peak) / (last.size - before.size)
    return int(last.peak + max(per_sequence, 0) * (size - last.size))


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
    with guards.working_set(budget=guards.memory_budget(cfg.max_memory)):
        trial_step(step, model, optimizer, x, y)
    peak = max(ranks.gather_json(mx.get_peak_memory()))
    mx.clear_cache()
    return peak


def choose(
    model,
    optimizer,
    cfg: TrainConfig,
    ranks: Ranks,
    splits: Splits,
    measure=measure,
    resident: int | None = None,
) -> MicroBatch:
    """--micro-batch auto: the largest power-of-two micro-batch whose trial step fits,
    never running one predicted over the budget. `measure` and `resident` (the bytes
    held before any step, on the rank that holds most) are injectable for tests."""
    budget = guards.memory_budget(cfg.max_memory)
    if resident is None:
        mx.eval(model.parameters(), optimizer.state)  # lazy until now: made, they count
        resident = max(ranks.gather_json(mx.get_active_memory()))
    measured: list[Trial] = []
    fits = None
    for size in sizes(cfg, ranks):
        if measured and (expected := predict(measured, size, resident)) > budget:
            trials = [*measured, Trial(size, expected, predicted=True)]
            break
        measured.append(Trial(size, measure(model, optimizer, cfg, ranks, splits, size)))
        trials = measured
        if measured[-1].peak > budget:
            break
        fits = MicroBatch(size, cfg.batch_size // (ranks.size * size), measured[-1].peak, budget)
    if fits is None:
        raise UserError(
            f"no micro-batch fits: one sequence's step peaked at "
            f"{guards.size_text(measured[0].peak)}, over the budget of "
            f"{guards.size_text(budget)} (--max-memory); try "
            f"--activation-checkpointing, --dtype bfloat16 or a shorter --block-size"
        )
    fits.trials = list(trials)
    return fits
