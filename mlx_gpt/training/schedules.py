"""Learning-rate schedules: nanoGPT's warm-up then cosine decay, and the speedrun's
warm-up, stable, then linear cool-down (wsd)."""

from __future__ import annotations

import math

import mlx.core as mx

from mlx_gpt.config import TrainConfig


def lr_schedule(cfg: TrainConfig, peak: float | None = None):
    """The rate of the update after `step` updates (0 for the first), for a group whose
    peak is `peak` [default: --learning-rate]; a float when it is constant.

    The optimizer calls it with the number of updates already made, which is nanoGPT's
    `iter_num`, build-nanogpt's `step` and the speedrun's `step`. The warm-up is the
    same in both schedules: nanoGPT climbs to the peak over warmup + 1 steps,
    build-nanogpt over warmup (--warmup-rule). After it:

        cosine   from the peak down to --min-lr at --lr-decay-iters, then --min-lr
                 (a group of another peak decays to the same fraction of it)
        wsd      the peak until the last --cooldown-frac of --max-iters, then a straight
                 line that would reach 0 at --max-iters (the speedrun's set_hparams)
    """
    lr = cfg.learning_rate if peak is None else peak
    warmup = cfg.warmup_iters
    divisor = warmup + 1 if cfg.warmup_rule == "nanogpt" else warmup
    if cfg.schedule == "wsd":
        steps, frac = cfg.max_iters, cfg.cooldown_frac

        def wsd(step: mx.array) -> mx.array:
            it = step.astype(mx.float32)
            # (1 - it / steps) / frac, written so that float32 keeps the last steps'
            # small rates exact: steps - it is a whole number.
            cooling = it >= (1 - frac) * steps
            eta = mx.where(cooling, (steps - it) / max(frac * steps, 1e-9), 1.0)
            return mx.where(it < warmup, lr * (it + 1) / max(divisor, 1), lr * eta)

        return wsd
    if warmup == 0 and cfg.lr_decay_iters == 0:
        return lr
    min_lr = cfg.min_lr if peak is None else cfg.min_lr * peak / cfg.learning_rate
    decay = cfg.lr_decay_iters

    def schedule(step: mx.array) -> mx.array:
        it = step.astype(mx.float32)
        warm = lr * (it + 1) / divisor
        if decay == 0:
            return mx.where(it < warmup, warm, lr)
        ratio = mx.clip((it - warmup) / (decay - warmup), 0.0, 1.0)
        cosine = min_lr + 0.5 * (1.0 + mx.cos(math.pi * ratio)) * (lr - min_lr)
        return mx.where(it < warmup, warm, cosine)

    return schedule
