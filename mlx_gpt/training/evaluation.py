"""The evaluation between steps: each split's mean loss over --eval-iters batches."""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from mlx_gpt.config import TrainConfig
from mlx_gpt.data.tokens import Splits, get_batch
from mlx_gpt.distributed.ranks import Ranks
from mlx_gpt.model.gpt import GPT
from mlx_gpt.training.step import loss_fn


class EvaluationStopped(Exception):
    """Raised between two evaluation batches when a stop was asked for: the evaluation is
    abandoned and nothing of it is recorded."""


def estimate_loss(
    model: GPT,
    splits: Splits,
    cfg: TrainConfig,
    ranks: Ranks | None = None,
    *,
    on_batch: Callable[[str, int, int], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Mean loss of each split over eval_iters batches, dropout off.

    Every evaluation draws the same batches (a generator seeded afresh), so points on
    the loss curve differ by the model alone, and evaluating draws nothing from the
    training batch stream (a resumed run sees the same batches as an unbroken one).
    With several ranks, each computes every ranks.size-th batch and the sums are added.
    Each batch goes through the model a micro-batch at a time (--grad-accum parts), so
    an evaluation needs no more memory than a step.

    After each batch, on_batch(split, batches done, eval_iters) reports progress (the
    loss is on the host already, so this costs nothing) and stop() may end the
    evaluation with EvaluationStopped. With several ranks, stop() must give every rank
    the same answer at the same batch (Ranks.agree_to_stop).
    """
    ranks = ranks or Ranks()
    model.eval()
    rng = np.random.default_rng([cfg.seed, 1])
    n = ranks.size * cfg.grad_accum  # micro-batches per batch
    out = {}
    try:
        for name in ("train", "val"):
            data = getattr(splits, name)
            total = 0.0
            for i in range(cfg.eval_iters):
                x, y = get_batch(data, cfg.batch_size, cfg.block_size, rng)  # every rank draws all
                if i % ranks.size == ranks.rank:
                    parts = zip(mx.split(x, n), mx.split(y, n), strict=True)
                    total += sum(loss_fn(model, *part).item() for part in parts) / n
                if on_batch:
                    on_batch(name, i + 1, cfg.eval_iters)
                if stop and stop():
                    raise EvaluationStopped
            if ranks.size > 1:
                total = ranks.run(lambda t=total: ranks.all_sum(mx.array(t))).item()
            out[name] = total / cfg.eval_iters
    finally:
        model.train()
    return out
