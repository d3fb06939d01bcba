"""The model's Linear: mlx.nn's, and, for bf16 compute on float32 weights, a product
that casts the weight itself and does not keep the cast.

With --dtype bfloat16 the weights stay float32 (the masters) and the passes run in
bfloat16 (training/step.py). Cast up front, each weight's bfloat16 copy is an input of
its matmul, and the matmul's backward pass (d_x = d_y @ w) holds it from the forward
pass to the backward one: all of them at once while the loss is computed, 170 MB for
GPT-2's blocks on top of the 2 GB of weights and moments. Here the forward pass casts
the weight for its product and drops the cast; the backward pass casts it again. A
cast is one read of the weight, cheap beside the matmuls that use it.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn


@mx.custom_function
def cast_matmul(x: mx.array, w: mx.array) -> mx.array:
    """x @ w.T with w cast to x's dtype: (..., in) and (out, in) -> (..., out)."""
    return x @ w.astype(x.dtype).T


@cast_matmul.vjp
def _cast_matmul_vjp(primals, cotangents, output):
    # Two inputs come as a tuple; the one output's cotangent as an array.
    (x, w), d_y = primals, cotangents  # d_y (..., out)
    # The weight waits for the cotangent before it is cast again: otherwise mx.compile
    # sees the same cast of the same weight as in the forward pass, merges the two, and
    # keeps that one alive in between, which is what this function avoids.
    w_c = mx.depends(w, d_y).astype(x.dtype)
    d_x = d_y @ w_c  # (..., in)
    d_w = d_y.reshape(-1, d_y.shape[-1]).T @ x.reshape(-1, x.shape[-1])  # (out, in)
    return d_x, d_w.astype(w.dtype)  # the gradient reaches the float32 weight as float32


class Linear(nn.Linear):
    """nn.Linear, which also takes inputs in a narrower dtype than its weight (bf16
    compute on float32 weights): then the product is cast_matmul's. The bias is cast
    with the other small parameters, by the step."""

    def __call__(self, x: mx.array) -> mx.array:
        if x.dtype == self.weight.dtype:
            return super().__call__(x)
        y = cast_matmul(x, self.weight)
        return y + self.bias if "bias" in self else y


def matmul_weights(model: nn.Module) -> set[str]:
    """The names (as tree_flatten gives them) of the Linear weights that cast themselves:
    the ones bf16 compute leaves float32."""
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, Linear)}
