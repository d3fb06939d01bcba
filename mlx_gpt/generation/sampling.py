"""Turning logits into the next token: temperature, top-k, top-p (nucleus), greedy."""

from __future__ import annotations

import mlx.core as mx

from mlx_gpt.errors import UserError


def top_k_filter(logits: mx.array, k: int) -> mx.array:
    """Keep the k largest logits of each row (ties with the k-th stay); the rest -> -inf."""
    if k >= logits.shape[-1]:
        return logits
    kth = mx.sort(logits, axis=-1)[..., -k, None]  # (B, 1): the k-th largest
    return mx.where(logits < kth, -mx.inf, logits)


def top_p_filter(logits: mx.array, p: float) -> mx.array:
    """Keep the smallest set of most likely tokens whose probabilities reach p."""
    if p >= 1.0:
        return logits
    order = mx.argsort(-logits, axis=-1)  # most likely first
    probs = mx.take_along_axis(mx.softmax(logits, axis=-1), order, axis=-1)
    # A token goes when the ones before it already reach p; the most likely always stays.
    drop_sorted = (mx.cumsum(probs, axis=-1) - probs) >= p
    drop = mx.take_along_axis(drop_sorted, mx.argsort(order, axis=-1), axis=-1)
    return mx.where(drop, -mx.inf, logits)


class Sampler:
    """Draws next tokens from (B, vocab) logits with its own key chain, so the same seed
    gives the same text however the logits were computed."""

    def __init__(
        self,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 1337,
    ):
        if temperature < 0:
            raise UserError("--temperature must be >= 0 (0 is greedy)")
        if top_k is not None and top_k < 1:
            raise UserError("--top-k must be at least 1")
        if top_p is not None and not 0 < top_p <= 1:
            raise UserError("--top-p must be in (0, 1]")
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.state = [mx.random.key(seed)]  # a list, so that compiled decoding can update it

    def __call__(self, logits: mx.array) -> mx.array:
        if self.temperature == 0:
            return mx.argmax(logits, axis=-1)
        logits = logits / self.temperature
        if self.top_k:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None:
            logits = top_p_filter(logits, self.top_p)
        self.state[0], key = mx.random.split(self.state[0])
        return mx.random.categorical(logits, axis=-1, key=key)  # categorical takes logits
