"""AdamW as PyTorch computes it, and nanoGPT's learning-rate schedule."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from mlx_gpt.config import TrainConfig


class AdamW(optim.AdamW):
    """MLX's AdamW with PyTorch's bias correction, optionally decaying matrices only.

    nanoGPT decays the 2-D weights (matmuls and embeddings) and leaves biases and
    LayerNorm parameters alone; gpt.py (torch.optim.AdamW defaults) decays everything.
    """

    def __init__(self, *args, decay_matrices_only: bool = False, **kwargs):
        super().__init__(*args, bias_correction=True, **kwargs)
        self.decay_matrices_only = decay_matrices_only
        self._compiled_updates: dict[tuple, object] = {}  # update_in_parts's, by moments

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if self.decay_matrices_only and parameter.ndim < 2:
            return optim.Adam.apply_single(self, gradient, parameter, state)
        return super().apply_single(gradient, parameter, state)

    def update_in_parts(
        self, model: nn.Module, gradients: dict, scale: mx.array, commit: bool = True
    ) -> None:
        """update(model, gradients x scale), evaluated a weight at a time; with commit
        False, every new value is computed and dropped, and nothing changes (a trial of
        the memory the update needs).

        MLX's update is functional: the new weights and moments are new arrays, and the
        old ones are freed only when the whole update is done, so a one-piece update
        holds the model and its moments twice (1.5 GB more for GPT-2 124M). Here each
        weight's new value and moments are computed and evaluated before the next's, so
        memory holds one weight's twice at most (GPT-2's wte: 0.46 GB). Each weight's
        update is one compiled call, the same arithmetic as apply_single."""
        if not self._initialized:
            self.init(gradients)
        counters = {k: self.state[k] for k in ("step", *self._schedulers)}
        for name, scheduler in self._schedulers.items():
            self.state[name] = scheduler(self.step)
        self.state["step"] = self.step + 1
        for path, gradient in tree_flatten(gradients):
            holder, key = _parent(model, path)
            state = _parent(self.state, path)[0][key]
            moments = sorted(state)
            new = self._compiled(moments)(
                self.state["learning_rate"], self.state["step"], scale, gradient, holder[key],
                *(state[k] for k in moments),
            )  # fmt: skip
            mx.eval(new)
            if commit:
                holder[key] = new[0]
                state.update(zip(moments, new[1:], strict=True))
        if not commit:
            self.state.update(counters)

    def _compiled(self, moments: list[str]):
        """(lr, step, scale, gradient, parameter, *moments) -> (parameter, *moments),
        compiled. apply_single reads the rate and the step from self.state; while it is
        traced they are the call's inputs, so that the compiled function takes each
        step's values instead of keeping the first ones as constants."""
        key = tuple(moments)
        if key not in self._compiled_updates:

            def one(lr, step, scale, gradient, parameter, *values):
                saved = self.state["learning_rate"], self.state["step"]
                self.state["learning_rate"], self.state["step"] = lr, step
                try:
                    state = dict(zip(moments, values, strict=True))
                    parameter = self.apply_single(gradient * scale, parameter, state)
                finally:
                    self.state["learning_rate"], self.state["step"] = saved
                return (parameter, *(state[k] for k in moments))

            self._compiled_updates[key] = mx.compile(one)
        return self._compiled_updates[key]


def _parent(tree, path: str):
    """The container of `path` ("h.3.attn.c_attn.weight") in a tree of dicts and lists,
    a module or the optimizer's state, and the last key."""
    *keys, last = path.split(".")
    for k in keys:
        tree = tree[int(k)] if isinstance(tree, list) else tree[k]
    return tree, last


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
