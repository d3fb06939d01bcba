"""The checks that keep a long run from losing work: a loss that diverges, a batch too big
for the machine's memory, training text that changed under a resumed run, and the clock
that says when to save latest/ between evaluations."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlx.core as mx

from mlx_gpt.errors import Diverged, UserError
from mlx_gpt.machine.facts import GB, Machine


def check_finite(loss: float, step: int, saved_step: int, cfg: Any) -> None:
    """Stop at the first non-finite loss, before anything from that step is saved."""
    if not math.isfinite(loss):
        raise _diverged(f"the loss became {loss} at step {step}", saved_step, cfg)


def check_finite_weights(model: Any, step: int, saved_step: int, cfg: Any) -> None:
    """Before a save: weights that an update pushed to inf or nan are never written."""
    from mlx.utils import tree_flatten

    flags = [mx.all(mx.isfinite(p)) for _, p in tree_flatten(model.parameters())]
    if not mx.all(mx.stack(flags)).item():
        raise _diverged(f"the weights became inf or nan at step {step}", saved_step, cfg)


def _diverged(what: str, saved_step: int, cfg: Any) -> Diverged:
    clip = "--grad-clip 1.0" if cfg.grad_clip == 0 else f"a --grad-clip below {cfg.grad_clip:g}"
    return Diverged(
        f"{what}: training stopped, latest/ keeps step {saved_step}; "
        f"try a lower --learning-rate (now {cfg.learning_rate:g}) or {clip}"
    )


def check_same_data(saved: str | None, current: str, data_changed: bool) -> None:
    """A resumed run continues on the text it started with, unless told otherwise."""
    if saved is None or saved == current or data_changed:
        return
    raise UserError(
        f"the training text differs from the one this run started on (sha256 "
        f"{current[:12]}... vs {saved[:12]}...); pass --data-changed to resume on it anyway"
    )


def memory_budget(max_memory_gb: float | None, machine: Machine | None = None) -> int:
    """Bytes a run may use: --max-memory, else the machine's default budget (80% of what
    Metal recommends on a Mac GPU, of the GPU's memory under CUDA, of RAM on a CPU)."""
    if max_memory_gb is not None:
        return int(max_memory_gb * GB)
    return (machine or Machine.detect()).memory_budget_bytes()


def limit_memory(budget: int) -> None:
    """MLX's memory limit at the budget. Past it MLX waits for the work in flight before
    it allocates more; it never fails an allocation there, and on a Mac GPU it swaps
    rather than fail, so the budget keeps a run from getting that far only because the
    first step's peak is checked against it (check_memory) and auto's trials predict."""
    mx.set_memory_limit(budget)


@contextmanager
def working_set(machine: Machine | None = None, budget: int | None = None) -> Iterator[None]:
    """Inside, MLX's peak counter measures what the work needs, not how far ahead of it
    MLX ran. On a CPU the limit is 1 byte, so MLX waits for each operation before it
    allocates the next one's output (without that it allocates the outputs of most of a
    step's graph before much of it has run). On a GPU, the run's own budget, which is
    what bounds it in training (Machine.trial_memory_limit says why). For trial steps."""
    machine = machine or Machine.detect()
    limit = machine.trial_memory_limit(budget if budget is not None else mx.get_memory_limit())
    previous = mx.set_memory_limit(limit)
    try:
        yield
    finally:
        mx.set_memory_limit(previous)


def check_memory(peak: int, budget: int, batch_size: int) -> None:
    """After the first step: a run whose peak is over budget stops before the second."""
    if peak <= budget:
        return
    fits = max(1, int(batch_size * budget / peak * 0.9))
    advice = "try a smaller model"
    if fits < batch_size:
        advice = f"try --micro-batch auto (same batch, accumulated) or --batch-size {fits}"
    raise UserError(
        f"the first step used {size_text(peak)}, over the memory budget of {size_text(budget)} "
        f"(--max-memory): {advice}"
    )


def size_text(n: int) -> str:
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 2**20:,.1f} MB"


class SaveClock:
    """Says when `minutes` have passed since the last save of latest/ (0: never)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds > 0 and time.monotonic() - self.last >= self.seconds

    def saved(self) -> None:
        self.last = time.monotonic()
