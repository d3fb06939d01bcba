"""The checks that keep a long run from losing work: a loss that diverges, a batch too big
for the machine's memory, training text that changed under a resumed run, and the clock
that says when to save latest/ between evaluations."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mlx.core as mx

from mlx_gpt.errors import Diverged, UserError

GB = 1024**3
BUDGET_SHARE = 0.8  # of what the machine recommends (Mac) or has (elsewhere)


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


def memory_budget(max_memory_gb: float | None, device: dict[str, Any] | None = None) -> int:
    """Bytes a run may use: --max-memory, else 80% of what Metal recommends on a Mac,
    else 80% of physical RAM. `device` is mx.metal.device_info() on a Mac (injectable
    for tests)."""
    if max_memory_gb is not None:
        return int(max_memory_gb * GB)
    if device is None and sys.platform == "darwin" and mx.metal.is_available():
        device = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
    if device and device.get("max_recommended_working_set_size"):
        return int(BUDGET_SHARE * device["max_recommended_working_set_size"])
    return int(BUDGET_SHARE * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def limit_memory(budget: int) -> None:
    """MLX's memory limit at the budget: past it, MLX waits for the work in flight
    before it allocates more, and on a Mac GPU fails cleanly instead of letting the
    machine swap (which can freeze the whole laptop)."""
    mx.set_memory_limit(budget)


@contextmanager
def working_set() -> Iterator[None]:
    """Inside, MLX's peak counter measures what the work needs, not how far ahead of
    it MLX ran: with its limit this low, MLX waits for each operation before it
    allocates the next one's output. Without that, on a CPU, MLX allocates the outputs
    of most of a step's graph before much of it has run, up to the limit; a run at the
    budget (limit_memory) stays under it either way. Slower: for trial steps."""
    previous = mx.set_memory_limit(1)
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
