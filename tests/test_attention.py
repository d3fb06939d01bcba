"""Training's attention a block of queries at a time (attention.py) and its loss a block
of logit rows at a time (losses.py): the plain forms' values and gradients."""

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_gpt.model import losses
from mlx_gpt.model.attention import causal_attention
from mlx_gpt.model.gpt import GPT, GPTConfig, causal_mask
from mlx_gpt.training.optimizer import AdamW
from mlx_gpt.training.step import loss_fn, make_train_step


def plain_attention(q, k, v, scale):
    t = q.shape[2]
    return mx.softmax(q @ k.swapaxes(-1, -2) * scale + causal_mask(t), axis=-1) @ v


@pytest.mark.parametrize("compiled", [False, True])
def test_block_attention_keeps_no_scores_between_the_passes(compiled):
    # A backward pass that recomputed the scores from q and k as the forward pass did
    # kept 2.6 queries' worth a call here; compiled, where MLX merged the two, every
    # block's scores, (T, T) / 2 a head: 8.3 queries' worth.
    from test_activations import memory_kept_per_call

    attention = causal_attention(0.125, 128)
    q = mx.random.normal((1, 4, 768, 64))  # queries, keys and values alike: 0.75 MB

    def call(q):
        return attention(q, q, q)

    assert memory_kept_per_call(call, q, compiled) <= 2 * q.nbytes  # q, the output, lse


@pytest.mark.parametrize("t", [128, 300])  # one block, and blocks with a ragged last one
def test_block_attention_has_the_plain_forms_values_and_gradients(t):
    mx.random.seed(0)
    q, k, v, w = (mx.random.normal((2, 3, t, 16)) for _ in range(4))
    scale = 16**-0.5
    attention = causal_attention(scale, 128)

    def plain_loss(q, k, v):
        return (plain_attention(q, k, v, scale) * w).sum()

    def block_loss(q, k, v):
        return (attention(q, k, v) * w).sum()

    np.testing.assert_allclose(
        np.array(attention(q, k, v)), np.array(plain_attention(q, k, v, scale)), atol=1e-5
    )
    expected = mx.grad(plain_loss, argnums=(0, 1, 2))(q, k, v)
    for compiled in (False, True):
        grad = mx.grad(block_loss, argnums=(0, 1, 2))
        found = (mx.compile(grad) if compiled else grad)(q, k, v)
        for ours, theirs in zip(found, expected, strict=True):
            np.testing.assert_allclose(np.array(ours), np.array(theirs), atol=1e-5)


def test_block_loss_has_the_plain_losss_value_and_gradients(monkeypatch):
    monkeypatch.setattr(losses, "LOGITS_BYTES", 4 * 500 * 64)  # blocks of 64 rows
    mx.random.seed(1)
    h, w = mx.random.normal((3, 100, 32)), mx.random.normal((500, 32)) * 0.1
    y = mx.random.randint(0, 500, (3, 100))

    def plain(h, w):
        return nn.losses.cross_entropy(h @ w.T, y, reduction="mean")

    def blocks(h, w):
        return 2.0 * losses.head_cross_entropy(h, w, y)  # a scale downstream, too

    assert abs(losses.head_cross_entropy(h, w, y).item() - plain(h, w).item()) < 1e-5
    expected = mx.grad(plain, argnums=(0, 1))(h, w)
    for ours, theirs in zip(mx.grad(blocks, argnums=(0, 1))(h, w), expected, strict=True):
        np.testing.assert_allclose(np.array(ours), 2.0 * np.array(theirs), atol=1e-6)


def loss_gradient_peak(vocab: int, c: int, rows: int, compiled: bool) -> int:
    """Bytes at the peak of the blocked loss's gradients, over what was there before."""
    from mlx_gpt.training import guards

    w, h = mx.random.normal((vocab, c)) * 0.02, mx.random.normal((rows, c))
    y = mx.random.randint(0, vocab, (rows,))
    grad = mx.grad(lambda h, w: losses.head_cross_entropy(h, w, y), argnums=(0, 1))
    grad = mx.compile(grad) if compiled else grad
    mx.eval(h, w, y)
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    with guards.working_set():
        mx.eval(grad(h, w))
    return mx.get_peak_memory() - before


@pytest.mark.parametrize("compiled", [False, True])
def test_block_loss_memory_does_not_grow_with_the_logits_of_the_batch(monkeypatch, compiled):
    # The running total reads each block's logits; left unevaluated to the end, it kept
    # every block's logits alive: the peak grew by the logits of every row added.
    monkeypatch.setattr(losses, "LOGITS_BYTES", 4 * 5000 * 100)  # blocks of 100 rows
    added_logits = 4 * 5000 * (1200 - 400)  # the float32 logits of the rows added
    grown = loss_gradient_peak(5000, 64, 1200, compiled) - loss_gradient_peak(
        5000, 64, 400, compiled
    )
    assert grown < 0.25 * added_logits


@pytest.mark.parametrize("compiled", [False, True])
def test_block_loss_sums_the_heads_gradient_in_place(monkeypatch, compiled):
    # Each block adds its share of the head's gradient, a (vocab, C) array as large as
    # the head. Added as a new array, two such sums and the share were alive at once.
    monkeypatch.setattr(losses, "LOGITS_BYTES", 4 * 20_000 * 50)  # 8 blocks of 50 rows
    heads_gradient = 4 * 20_000 * 256
    assert loss_gradient_peak(20_000, 256, 400, compiled) < 1.8 * heads_gradient


@pytest.mark.parametrize("checkpoint_blocks", [False, True])
def test_a_model_in_training_has_the_gradients_of_the_plain_model(monkeypatch, checkpoint_blocks):
    # 300 positions: attention in 3 blocks; 97 tokens, tied: the loss in blocks of 50 rows
    monkeypatch.setattr(losses, "LOGITS_BYTES", 4 * 97 * 50)
    mx.random.seed(2)
    config = GPTConfig(vocab_size=97, block_size=300, n_layer=2, n_head=2, n_embd=32,
                       dropout=0.0, activation="gelu_tanh", tie_embeddings=True)  # fmt: skip
    model = GPT(config)
    x, y = mx.random.randint(0, 97, (2, 300)), mx.random.randint(0, 97, (2, 300))

    def plain(model, x, y):  # eval mode: mx.fast's attention, the logits at once
        return nn.losses.cross_entropy(model(x), y, reduction="mean")

    model.train()
    model.checkpoint_blocks = checkpoint_blocks  # the blocks recomputed, attention and all
    loss, grads = nn.value_and_grad(model, loss_fn)(model, x, y)
    model.eval()
    expected_loss, expected = nn.value_and_grad(model, plain)(model, x, y)
    assert abs(loss.item() - expected_loss.item()) < 1e-5
    expected = dict(tree_flatten(expected))
    for name, g in tree_flatten(grads):
        np.testing.assert_allclose(np.array(g), np.array(expected[name]), atol=1e-5, err_msg=name)


def test_the_compiled_step_trains_through_both():
    mx.random.seed(3)
    config = GPTConfig(vocab_size=97, block_size=300, n_layer=1, n_head=2, n_embd=32,
                       dropout=0.0, tie_embeddings=True)  # fmt: skip
    model = GPT(config)
    optimizer = AdamW(learning_rate=1e-2)
    optimizer.init(model.trainable_parameters())
    step = make_train_step(model, optimizer, 1.0)
    x = mx.random.randint(0, 97, (2, 300))
    losses_seen = []
    for _ in range(5):
        loss = step(x, x)
        mx.eval(loss, model.state, optimizer.state)
        losses_seen.append(loss.item())
    assert losses_seen[-1] < losses_seen[0] - 0.5  # it learns to copy its input
