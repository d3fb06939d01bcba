"""AdamW as PyTorch computes it, and nanoGPT's learning-rate schedule."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.optimizers as optim

from mlx_gpt.config import TrainConfig


class AdamW(optim.AdamW):
    """MLX's AdamW with PyTorch's bias correction, optionally decaying matrices only.

    nanoGPT decays the 2-D weights (matmuls and embeddings) and leaves biases and
    LayerNorm parameters alone; gpt.py (torch.optim.AdamW defaults) decays everything.
    """

    def __init__(self, *args, decay_matrices_only: bool = False, **kwargs):
        super().__init__(*args, bias_correction=True, **kwargs)
        self.decay_matrices_only = decay_matrices_only

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if self.decay_matrices_only and parameter.ndim < 2:
            return optim.Adam.apply_single(self, gradient, parameter, state)
        return super().apply_single(gradient, parameter, state)


def lr_schedule(cfg: TrainConfig):
    """Constant, or nanoGPT's linear warm-up then cosine decay to min_lr.

    The optimizer calls it with the number of updates already made (0 for the first),
    which is nanoGPT's `iter_num` and build-nanogpt's `step`. The two differ only in the
    warm-up's divisor (--warmup-rule): nanoGPT climbs to lr over warmup + 1 steps,
    build-nanogpt over warmup.
    """
    if cfg.warmup_iters == 0 and cfg.lr_decay_iters == 0:
        return cfg.learning_rate
    lr, min_lr, warmup, decay = cfg.learning_rate, cfg.min_lr, cfg.warmup_iters, cfg.lr_decay_iters
    divisor = warmup + 1 if cfg.warmup_rule == "nanogpt" else warmup

    def schedule(step: mx.array) -> mx.array:
        it = step.astype(mx.float32)
        warm = lr * (it + 1) / divisor
        if decay == 0:
            return mx.where(it < warmup, warm, lr)
        ratio = mx.clip((it - warmup) / (decay - warmup), 0.0, 1.0)
        cosine = min_lr + 0.5 * (1.0 + mx.cos(math.pi * ratio)) * (lr - min_lr)
        return mx.where(it < warmup, warm, cosine)

    return schedule


def make_optimizer(cfg: TrainConfig) -> AdamW:
    return AdamW(
        learning_rate=lr_schedule(cfg),
        betas=[cfg.beta1, cfg.beta2],
        weight_decay=cfg.weight_decay,
        decay_matrices_only=cfg.decay_matrices_only,
    )
