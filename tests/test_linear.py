"""bf16 compute on float32 weights: the Linear weights are cast inside their products
(mlx_gpt/model/linear.py), with the results of casting them up front and less memory."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.model.linear import Linear
from mlx_gpt.training import guards, step
from mlx_gpt.training.step import value_and_grad


def close(a: mx.array, b: mx.array) -> bool:
    a, b = np.array(a.astype(mx.float32)), np.array(b.astype(mx.float32))
    return np.allclose(a, b, rtol=2e-2, atol=2e-2 * np.abs(b).max())


@pytest.mark.parametrize("compiled", [False, True])
def test_a_narrow_input_gets_the_values_and_gradients_of_the_weight_cast_up_front(compiled):
    mx.random.seed(0)
    linear = Linear(48, 80)
    w, b = linear.weight, linear.bias  # float32
    x = mx.random.normal((2, 5, 48)).astype(mx.bfloat16)
    r = mx.random.normal((2, 5, 80))

    def cast_inside(w, b, x):
        linear.update({"weight": w, "bias": b.astype(mx.bfloat16)})
        return (linear(x) * r).sum()

    def cast_up_front(w, b, x):
        return ((x @ w.astype(mx.bfloat16).T + b.astype(mx.bfloat16)) * r).sum()

    grad = [mx.value_and_grad(f, argnums=(0, 1, 2)) for f in (cast_inside, cast_up_front)]
    if compiled:
        grad = [mx.compile(g) for g in grad]
    (value, grads), (ref_value, ref_grads) = (g(w, b, x) for g in grad)
    assert close(value, ref_value)
    for g, ref in zip(grads, ref_grads, strict=True):
        assert g.dtype == ref.dtype and g.shape == ref.shape
        assert close(g, ref)
    assert grads[0].dtype == mx.float32 and grads[2].dtype == mx.bfloat16


def test_bf16_compute_keeps_no_bf16_copy_of_the_linear_weights_between_the_passes(monkeypatch):
    # Wide layers and a short sequence: the weights, not the activations, fill memory.
    cfg = GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=256, dropout=0.0)
    model = GPT(cfg)
    x = mx.array(np.random.default_rng(0).integers(0, 65, (16, 64)).astype(np.int32))

    def peak(loss_and_grad) -> int:
        # Compiled as the training step is: the model's state in and out.
        state = [model.state]
        compiled = mx.compile(lambda x, y: loss_and_grad(model, x, y), inputs=state, outputs=state)
        mx.eval(model.parameters())
        base = mx.get_active_memory()
        mx.reset_peak_memory()
        with guards.working_set():
            mx.eval(compiled(x, x))
        return mx.get_peak_memory() - base

    inside = peak(value_and_grad(model, mx.bfloat16))
    monkeypatch.setattr(step, "matmul_weights", lambda model: set())  # every weight cast first
    up_front = peak(value_and_grad(model, mx.bfloat16))
    blocks = sum(p.size for k, p in tree_flatten(model.parameters()) if k.endswith("weight"))
    bf16_weights = 2 * (blocks - model.wte.weight.size - model.wpe.weight.size)
    assert up_front - inside > bf16_weights / 2, (up_front, inside, bf16_weights)
