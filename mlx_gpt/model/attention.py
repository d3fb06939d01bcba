"""Causal self-attention for training, a block of queries at a time, with its own
backward pass: flash attention's bookkeeping written in MLX operations.

The plain form, softmax(q @ k.T * scale + mask) @ v, keeps each layer's (T, T)
attention weights per head for the backward pass. At GPT-2's block of 1024 that is
12 heads x 1024 x 1024 float32 values, 50 MB a sequence a layer, two or three times
over (the scores, the masked scores, the weights); about 1.7 GB of a 124M model's
2.6 GB of activations a sequence, where PyTorch's fused attention keeps none. MLX's
mx.fast.scaled_dot_product_attention is fused for inference but differentiates
through the plain form (ml-explore/mlx#3241 would change that on Metal).

Here the forward pass takes the queries `chunk` at a time. A block of queries sees only
the keys up to its last position (the rest are masked, so they are skipped, which also
halves the work), and what it keeps is its output and the log-sum-exp of its scores.
The backward pass recomputes each block's weights from those, as flash attention does
(Dao et al., 2022), so memory holds one block's (chunk, T) weights at a time instead
of every layer's (T, T). The gradients are the plain form's up to float rounding
(tests/test_attention.py).
"""

from __future__ import annotations

from functools import cache

import mlx.core as mx

CHUNK = 128  # queries a block: 12 heads x 128 x 1024 float32 weights are 6 MB


def _blocks(t: int, chunk: int) -> list[tuple[int, int]]:
    return [(i, min(i + chunk, t)) for i in range(0, t, chunk)]


def _weights_logits(q: mx.array, k: mx.array, start: int, scale: float) -> mx.array:
    """float32 scores of the queries at start.. over the keys up to their last one,
    the later keys of each query (inside this diagonal block) set to -inf."""
    scores = (q @ k.swapaxes(-1, -2)).astype(mx.float32) * scale  # (B, H, c, end)
    end = k.shape[2]
    later = mx.arange(end)[None, :] > mx.arange(start, start + q.shape[2])[:, None]
    return mx.where(later, -mx.inf, scores)


@cache
def causal_attention(scale: float, chunk: int = CHUNK):
    """attention(q, k, v) -> (B, H, T, head_size), for (B, H, T, head_size) inputs."""

    @mx.custom_function
    def attention(q: mx.array, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        outs, lses = [], []
        for start, end in _blocks(q.shape[2], chunk):
            scores = _weights_logits(q[:, :, start:end], k[:, :, :end], start, scale)
            lse = mx.logsumexp(scores, axis=-1, keepdims=True)  # (B, H, c, 1)
            weights = mx.exp(scores - lse).astype(v.dtype)
            outs.append(weights @ v[:, :, :end])  # (B, H, c, head_size)
            lses.append(lse)
        return mx.concatenate(outs, axis=2), mx.concatenate(lses, axis=2)

    @attention.vjp
    def attention_vjp(primals, cotangents, outputs):
        d_out = cotangents[0]  # the log-sum-exp is bookkeeping: nothing downstream uses it
        # The weights are recomputed from inputs that wait for the cotangent. Without
        # that, mx.compile sees the same scores computed from the same q and k as in the
        # forward pass, merges the two, and keeps every block's scores from the forward
        # pass to the backward one: (T, T) a head a layer, what this function avoids.
        q, k, v, out, lse = mx.depends([*primals, *outputs], [d_out])
        t = q.shape[2]
        d_qs, d_k, d_v = [], mx.zeros(k.shape, mx.float32), mx.zeros(v.shape, mx.float32)
        for start, end in _blocks(t, chunk):
            q_c, k_c, v_c, d_o = (
                q[:, :, start:end],
                k[:, :, :end],
                v[:, :, :end],
                d_out[:, :, start:end],
            )
            weights = mx.exp(_weights_logits(q_c, k_c, start, scale) - lse[:, :, start:end])
            d_weights = (d_o @ v_c.swapaxes(-1, -2)).astype(mx.float32)  # (B, H, c, end)
            # softmax's backward: w * (dw - sum(dw * w)), where sum(dw * w) = d_o . out
            rowdot = (d_o.astype(mx.float32) * out[:, :, start:end].astype(mx.float32)).sum(
                axis=-1, keepdims=True
            )
            d_scores = (weights * (d_weights - rowdot) * scale).astype(q.dtype)
            d_qs.append(d_scores @ k_c)
            pad = [(0, 0), (0, 0), (0, t - end), (0, 0)]
            d_k = d_k + mx.pad(d_scores.swapaxes(-1, -2) @ q_c, pad)
            d_v = d_v + mx.pad(weights.astype(v.dtype).swapaxes(-1, -2) @ d_o, pad)
        return mx.concatenate(d_qs, axis=2), d_k.astype(k.dtype), d_v.astype(v.dtype)

    def call(q: mx.array, k: mx.array, v: mx.array) -> mx.array:
        return attention(q, k, v)[0]

    return call
