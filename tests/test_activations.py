"""The MLP's GELUs (activations.py): mlx.nn's values and gradients, and a backward pass
that keeps only each call's input, compiled or not."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlx_gpt.model.activations import gelu, gelu_tanh
from mlx_gpt.training import guards

GELUS = [(gelu, nn.gelu), (gelu_tanh, nn.gelu_approx)]


def memory_kept_per_call(f, x: mx.array, compiled: bool) -> float:
    """Bytes that the gradient of f(f(...f(x))) holds per call of f: the growth of its
    peak memory from a chain of 2 calls to one of 6. Measured with MLX allocating no
    further ahead than the work (guards.working_set), as training's first step is."""
    peaks = []
    for calls in (2, 6):

        def loss(x, calls=calls):
            for _ in range(calls):
                x = f(x)
            return x.sum()

        grad = mx.compile(mx.grad(loss)) if compiled else mx.grad(loss)
        mx.eval(x)
        mx.reset_peak_memory()
        before = mx.get_active_memory()
        with guards.working_set():
            mx.eval(grad(x))
        peaks.append(mx.get_peak_memory() - before)
    return (peaks[1] - peaks[0]) / 4


@pytest.mark.parametrize("ours, theirs", GELUS)
@pytest.mark.parametrize("compiled", [False, True])
def test_the_gelus_have_mlx_nns_values_and_gradients(ours, theirs, compiled):
    mx.random.seed(0)
    x, w = mx.random.normal((4, 300)) * 3, mx.random.normal((4, 300))

    def loss(f):
        return lambda x: (f(x) * w).sum()

    np.testing.assert_allclose(np.array(ours(x)), np.array(theirs(x)), atol=1e-6)
    grad = mx.compile(mx.grad(loss(ours))) if compiled else mx.grad(loss(ours))
    np.testing.assert_allclose(np.array(grad(x)), np.array(mx.grad(loss(theirs))(x)), atol=1e-5)


@pytest.mark.parametrize("gelu_fn", [gelu, gelu_tanh])
@pytest.mark.parametrize("compiled", [False, True])
def test_a_chain_of_gelus_keeps_only_each_calls_input(gelu_fn, compiled):
    # mlx.nn's GELUs keep 3 to 4.5 inputs' worth a call (their intermediate results)
    x = mx.random.normal((256, 3072))  # 3 MB
    assert memory_kept_per_call(gelu_fn, x, compiled) <= 1.5 * x.nbytes
