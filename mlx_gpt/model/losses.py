"""The training loss with the head folded in: cross-entropy over a vocabulary too large
to hold all its logits at once.

GPT-2's head turns each of a sequence's 1024 positions into 50,304 logits: 206 MB of
float32 a sequence, and the softmax and its gradient as much again, whatever the
model's depth. `head_cross_entropy` takes the rows a few hundred at a time: each
block's logits give its loss and, at once, its gradient (softmax minus the one-hot
target), which flows into the hidden states' and the head weights' gradients; then
the block's logits are gone. What the backward pass keeps is those two gradients,
the size of the hidden states and of the head, so memory holds one block's logits
instead of the batch's. Liger's fused linear cross-entropy does the same on CUDA.

The gradients are the plain loss's up to float rounding (tests/test_attention.py);
a batch whose logits fit in LOGITS_BYTES takes the plain form, so the lecture's small
vocabulary computes what it always did.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

# The float32 logits of one block of rows. A block holds its logits, their softmax and
# its gradient at once, so 64 MB blocks cost GPT-2's step 64 MB more at its peak than
# these; smaller ones gained nothing more there.
LOGITS_BYTES = 32 * 2**20


def rows_per_block(vocab_size: int) -> int:
    return max(1, LOGITS_BYTES // (4 * vocab_size))


@mx.custom_function
def _summed_loss(h: mx.array, w: mx.array, y: mx.array):
    """(the summed cross-entropy of logits h @ w.T, its gradients for h and w): the
    gradients are made here, a block of rows at a time, for the vjp to scale."""
    rows = rows_per_block(w.shape[0])
    total, d_hs, d_w = mx.array(0.0), [], mx.zeros(w.shape, mx.float32)
    for start in range(0, h.shape[0], rows):
        h_c, y_c = h[start : start + rows], y[start : start + rows]
        if d_hs:
            # The graph is lazy: without this, evaluation may compute every block's
            # logits before any block's gradients, and hold them all. A block starts
            # once the one before it is done, its loss included (the running total
            # reads the logits too: left to the end, it kept every block's, 206 MB a
            # sequence), so one block's logits are alive at a time.
            h_c = mx.depends(h_c, [d_hs[-1], d_w, total])
        logits = (h_c @ w.T).astype(mx.float32)  # (rows, vocab)
        lse = mx.logsumexp(logits, axis=-1, keepdims=True)
        total = total + (lse.squeeze(-1) - mx.take_along_axis(logits, y_c[:, None], -1)[:, 0]).sum()
        # d loss / d logits = softmax - one_hot(target)
        d_logits = mx.exp(logits - lse)
        d_logits = mx.put_along_axis(
            d_logits, y_c[:, None], mx.take_along_axis(d_logits, y_c[:, None], -1) - 1.0, -1
        )
        d_hs.append(d_logits.astype(h.dtype) @ w)
        # One op that adds to the sum, whose buffer it can take over (the sum is read
        # by nothing else): written as d_w + d_logits.T @ h_c, the block's share and
        # two sums, each as large as the head, were alive at once. In float32, whatever
        # the compute dtype, as the gradient for the float32 head will be.
        d_w = mx.addmm(d_w, d_logits.T, h_c.astype(mx.float32))
    return total, mx.concatenate(d_hs, axis=0), d_w.astype(w.dtype)


@_summed_loss.vjp
def _summed_loss_vjp(primals, cotangents, outputs):
    _, d_h, d_w = outputs
    scale = cotangents[0]  # d(whatever is made of the loss) / d(loss)
    y = primals[2]
    return (scale * d_h).astype(d_h.dtype), (scale * d_w).astype(d_w.dtype), mx.zeros_like(y)


def head_cross_entropy(h: mx.array, w: mx.array, y: mx.array) -> mx.array:
    """The mean cross-entropy of the logits h @ w.T (no bias) against targets y, in
    float32; h (B, T, C), w (vocab, C), y (B, T)."""
    h, y = h.reshape(-1, h.shape[-1]), y.reshape(-1)  # (B * T, C), (B * T,)
    w = w.astype(h.dtype)  # an untied head's float32 weight, under bf16 compute
    if h.shape[0] <= rows_per_block(w.shape[0]):
        return nn.losses.cross_entropy((h @ w.T).astype(mx.float32), y, reduction="mean")
    return _summed_loss(h, w, y)[0] / y.size
