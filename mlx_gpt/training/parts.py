"""An optimizer update a part of the model at a time (AccumulatingStep's, step.py), for
any MLX optimizer whose update is its apply_single: AdamW's and Muon's here."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

PART_BYTES = 64 * 2**20  # of weights in one part of update_in_parts


class InParts:
    """Mixed into an mlx.optimizers.Optimizer, before it: update_in_parts, and a
    snapshot of the state to put back after a trial step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._compiled_update = None  # update_in_parts's, made at its first call

    def snapshot(self) -> dict:
        """The state as it is now; MLX arrays are immutable, so references are a copy."""
        return tree_map(lambda a: a, self.state)

    def restore(self, snapshot: dict) -> None:
        """The snapshot's state, into the same dict (a compiled step holds on to it)."""
        self.state.clear()
        self.state.update(snapshot)

    def update_in_parts(
        self, model: nn.Module, gradients: dict, scale: mx.array, commit: bool = True
    ) -> None:
        """update(model, gradients x scale), evaluated a part of the model at a time;
        with commit False, every new value is computed and dropped, and nothing changes
        (a trial of the memory the update needs).

        MLX's update is functional: the new weights and moments are new arrays, and the
        old ones are freed only when the whole update is done, so a one-piece update
        holds the model and its moments twice (1.5 GB more for GPT-2 124M). Here the
        weights go in parts of about PART_BYTES, each part's new values computed and
        evaluated before the next's, so memory holds one part twice at most (GPT-2's
        largest, wte alone: 0.46 GB with its moments). A model smaller than a part is
        one part: one compiled call and one evaluation, as a one-piece update."""
        if not self._initialized:
            self.init(gradients)
        counters = {k: self.state[k] for k in ("step", *self._schedulers)}
        for name, scheduler in self._schedulers.items():
            self.state[name] = scheduler(self.step)
        self.state["step"] = self.step + 1
        for part in _parts(tree_flatten(gradients)):
            holders = [_parent(model, path) for path, _ in part]
            states = [holder[key] for holder, key in (_parent(self.state, p) for p, _ in part)]
            params, moments = self._update_part(
                self.state["learning_rate"], self.state["step"], scale,
                [g for _, g in part], [holder[key] for holder, key in holders], states,
            )  # fmt: skip
            mx.eval(params, moments)
            if commit:
                for (holder, key), param, state, new in zip(
                    holders, params, states, moments, strict=True
                ):
                    holder[key] = param
                    state.update(new)
        if not commit:
            self.state.update(counters)

    def _update_part(self, lr, step, scale, gradients, params, states):
        """(new params, new moments) of one part, compiled once for each shape of part.
        apply_single reads the rate and the step from self.state; while it is traced
        they are the call's inputs, so that the compiled function takes each step's
        values instead of keeping the first ones as constants."""
        if self._compiled_update is None:

            def update(lr, step, scale, gradients, params, states):
                saved = self.state["learning_rate"], self.state["step"]
                self.state["learning_rate"], self.state["step"] = lr, step
                try:
                    states = [dict(s) for s in states]  # apply_single writes the new moments
                    params = [
                        self.apply_single(g * scale, p, s)
                        for g, p, s in zip(gradients, params, states, strict=True)
                    ]
                finally:
                    self.state["learning_rate"], self.state["step"] = saved
                return params, states

            self._compiled_update = mx.compile(update)
        return self._compiled_update(lr, step, scale, gradients, params, states)


def _parts(weights: list[tuple[str, mx.array]]) -> list[list[tuple[str, mx.array]]]:
    """Consecutive (path, array) pairs in parts of at least PART_BYTES (the last one
    may be less), so that a large weight is a part of its own."""
    parts, part, size = [], [], 0
    for item in weights:
        part.append(item)
        size += item[1].nbytes
        if size >= PART_BYTES:
            parts.append(part)
            part, size = [], 0
    return parts + [part] if part else parts


def _parent(tree, path: str):
    """The container of `path` ("h.3.attn.c_attn.weight") in a tree of dicts and lists,
    a module or the optimizer's state, and the last key."""
    *keys, last = path.split(".")
    for k in keys:
        tree = tree[int(k)] if isinstance(tree, list) else tree[k]
    return tree, last
