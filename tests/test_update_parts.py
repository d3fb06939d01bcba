"""An update a part of the model at a time (AccumulatingStep's) is the optimizer's
one-piece update, whatever the parts: AdamW's, and Muon with AdamW's."""

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_map

from mlx_gpt.config import TrainConfig
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.training import parts as parts_module
from mlx_gpt.training.optimizer import make_optimizer

CONFIG = GPTConfig(vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
# The modern block with biases and gains, so that each of Muon's and AdamW's groups has
# parameters.
MODERN = GPTConfig(
    vocab_size=50, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
    architecture="modern", qk_norm=True, norm_gains=True, activation="relu2",
)  # fmt: skip


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("decay_matrices_only", [True, False])
@pytest.mark.parametrize("part_bytes", [1, 3000, 2**30])  # a weight, a few, all in one
def test_an_update_in_parts_is_the_one_piece_update(
    monkeypatch, optimizer, decay_matrices_only, part_bytes
):
    monkeypatch.setattr(parts_module, "PART_BYTES", part_bytes)
    cfg = TrainConfig(learning_rate=1e-2, warmup_iters=2, lr_decay_iters=5, min_lr=1e-3,
                      weight_decay=0.1, decay_matrices_only=decay_matrices_only,
                      optimizer=optimizer)  # fmt: skip
    config = CONFIG if optimizer == "adamw" else MODERN
    mx.random.seed(0)
    whole, parts = GPT(config), GPT(config)
    parts.update(whole.parameters())
    opt_whole, opt_parts = make_optimizer(cfg), make_optimizer(cfg)
    for opt, model in ((opt_whole, whole), (opt_parts, parts)):
        opt.init(model.trainable_parameters())
    for step in range(4):  # the warm-up, the cosine and the bias correction move each step
        grads = tree_map(lambda p: mx.random.normal(p.shape), whole.trainable_parameters())
        scale = mx.array(0.5 + step)
        opt_whole.update(whole, tree_map(lambda g, s=scale: g * s, grads))
        opt_parts.update_in_parts(parts, grads, scale)
        mx.eval(whole.parameters(), opt_whole.state)
    ours, theirs = dict(tree_flatten(parts.parameters())), dict(tree_flatten(whole.parameters()))
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_allclose(np.array(ours[name]), np.array(theirs[name]), atol=1e-6)
    assert float(np.abs(np.array(ours["h.0.mlp.c_fc.weight"])).sum()) != 0.0
    states = [dict(tree_flatten(o.state)) for o in (opt_parts, opt_whole)]
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        np.testing.assert_allclose(np.array(states[0][name]), np.array(states[1][name]), atol=1e-6)
