"""Rotary position embeddings (RoPE, Su et al. 2021), as modded-nanogpt's speedrun
writes them (track 3's train_gpt_simple.py, nanochat alike).

No table of learned positions: each query and key is rotated by angles proportional to
its position, pair of channels by pair, so that the score of a query at position m
against a key at n depends on m - n alone. The channels pair up as (i, i + D/2). The
speedrun's form is "half-truncated": only the first D/4 pairs rotate, at angular
frequencies from 1 down to 1/1024 a position; the other D/4 pairs have frequency 0 and
carry no position at all. Rotating by -theta (y1 = x1 cos + x2 sin) is that code's
convention; either sign gives the same model.
"""

from __future__ import annotations

import mlx.core as mx

BASE = 1024  # the lowest frequency is 1 / BASE radians a position (the speedrun's)


def frequencies(head_size: int) -> mx.array:
    """Angular frequency of each of the head_size / 2 channel pairs: (head_size // 2,)."""
    rotating = head_size // 4
    freq = (1 / BASE) ** mx.linspace(0, 1, rotating)
    return mx.concatenate([freq, mx.zeros(head_size // 2 - rotating)])


def rotate(x: mx.array, positions: mx.array) -> mx.array:
    """x (B, n_head, T, head_size) rotated to `positions` (T,), in float32, returned in
    x's dtype. The positions may start at a KV cache's offset (an array)."""
    theta = positions.astype(mx.float32)[:, None] * frequencies(x.shape[-1])[None, :]
    cos, sin = mx.cos(theta), mx.sin(theta)  # (T, head_size // 2)
    x1, x2 = mx.split(x.astype(mx.float32), 2, axis=-1)
    return mx.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1).astype(x.dtype)
