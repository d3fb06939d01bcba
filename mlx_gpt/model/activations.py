"""The MLP's activations, by the name GPTConfig.activation gives them.

relu is the lecture's; gelu (exact, erf) is nanoGPT's; gelu_tanh is GPT-2's tanh
approximation; relu2, relu squared, the modern block's. The two GELUs compute what
mlx.nn's gelu and gelu_approx compute, with a backward pass of their own that keeps only
the input.

Differentiated as written, a GELU keeps its intermediate results for the backward
pass (the cube, the tanh, the sum): at GPT-2's width, (T, 3072) float32 arrays, 12 MB
a sequence each, a few per layer. Measured on GPT-2's blocks at a block of 1024, that
was 33 MB a layer a sequence of the 66 an MLX block kept, more than attention and the
projections together. Here the backward pass recomputes the derivative from the input,
which the Linear before it has made and which is kept anyway.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


def _tanh_inner(x: mx.array) -> mx.array:
    return mx.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x**3))


@mx.custom_function
def gelu_tanh(x: mx.array) -> mx.array:
    """0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), as nn.gelu_approx."""
    return 0.5 * x * (1 + _tanh_inner(x))


@gelu_tanh.vjp
def _gelu_tanh_vjp(x, cotangent, output):
    # One input and one output: MLX hands each over as an array, not a tuple. The input
    # waits for the cotangent, so that mx.compile does not merge this tanh with the
    # forward pass's and keep that one alive in between.
    x = mx.depends(x, cotangent)
    t = _tanh_inner(x)
    d_inner = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    return cotangent * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner)


@mx.custom_function
def gelu(x: mx.array) -> mx.array:
    """x Phi(x) with Phi the normal CDF, 0.5 (1 + erf(x / sqrt 2)), as nn.gelu."""
    return x * (1 + mx.erf(x * _SQRT_HALF)) / 2


@gelu.vjp
def _gelu_vjp(x, cotangent, output):
    x = mx.depends(x, cotangent)  # as in gelu_tanh's
    cdf = (1 + mx.erf(x * _SQRT_HALF)) / 2
    pdf = _INV_SQRT_2PI * mx.exp(-0.5 * x * x)
    return cotangent * (cdf + x * pdf)


def relu2(x: mx.array) -> mx.array:
    """relu(x)^2, the speedrun's MLP activation (modded-nanogpt, nanochat)."""
    return mx.square(nn.relu(x))


ACTIVATIONS = {"relu": nn.relu, "gelu": gelu, "gelu_tanh": gelu_tanh, "relu2": relu2}
