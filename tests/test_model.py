import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_gpt.config import TrainConfig
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.training.step import loss_fn

TINY = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)


def test_lecture_model_has_exactly_the_lecture_parameter_count():
    model = GPT(TrainConfig().model_config(vocab_size=65))
    assert model.num_params() == 10_788_929


def test_gpt2_parameter_names():
    from mlx.utils import tree_flatten

    names = {k for k, _ in tree_flatten(GPT(TINY).parameters())}
    for expected in (
        "wte.weight",
        "wpe.weight",
        "h.0.ln_1.weight",
        "h.0.attn.c_attn.weight",
        "h.0.attn.c_proj.bias",
        "h.1.ln_2.bias",
        "h.1.mlp.c_fc.weight",
        "h.1.mlp.c_proj.weight",
        "ln_f.weight",
        "lm_head.bias",
    ):
        assert expected in names
    assert "h.0.attn.c_attn.bias" not in names  # the lecture's heads have no bias


def test_init_is_normal_002_with_zero_biases():
    mx.random.seed(0)
    model = GPT(TrainConfig().model_config(vocab_size=65))
    w = np.array(model.h[0].mlp.c_fc.weight)
    assert abs(w.std() - 0.02) < 0.001 and abs(w.mean()) < 0.001
    assert abs(np.array(model.wte.weight).std() - 0.02) < 0.001
    assert not np.array(model.h[0].mlp.c_fc.bias).any()
    assert not np.array(model.lm_head.bias).any()


def test_changing_a_token_changes_no_earlier_logits():
    mx.random.seed(1)
    model = GPT(TINY)
    model.eval()
    idx = mx.random.randint(0, 65, (2, 16))
    t = 9
    changed = np.array(idx)
    changed[:, t] = (changed[:, t] + 1) % 65
    a, b = np.array(model(idx)), np.array(model(mx.array(changed)))
    np.testing.assert_allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert np.abs(a[:, t:] - b[:, t:]).max() > 1e-4  # later positions do see it


def test_training_mode_attention_is_causal_too():
    # The training path (explicit softmax with dropout) must mask like the fused one.
    cfg = GPTConfig(**{**TINY.__dict__, "dropout": 0.0})
    mx.random.seed(2)
    model = GPT(cfg)
    model.train()
    model.h[0].attn.dropout = 1e-9  # force the explicit path; dropping nothing in practice
    model.h[1].attn.dropout = 1e-9
    idx = mx.random.randint(0, 65, (1, 16))
    changed = np.array(idx)
    changed[0, 5] = (changed[0, 5] + 3) % 65
    mx.random.seed(3)
    a = np.array(model(idx))
    mx.random.seed(3)
    b = np.array(model(mx.array(changed)))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    model.eval()
    np.testing.assert_allclose(a, np.array(model(idx)), atol=1e-5)


def test_loss_at_init_is_near_uniform():
    mx.random.seed(3)
    model = GPT(TrainConfig(n_layer=2).model_config(vocab_size=65))
    model.eval()
    x = mx.random.randint(0, 65, (4, 256))
    y = mx.random.randint(0, 65, (4, 256))
    assert abs(loss_fn(model, x, y).item() - math.log(65)) < 0.1


def test_sequence_longer_than_block_size_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        GPT(TINY)(mx.zeros((1, 17), dtype=mx.int32))
