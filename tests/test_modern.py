"""The modern block (--architecture modern) against a PyTorch implementation of the
same block written here from modded-nanogpt's track 3 train_gpt_simple.py (its Rotary,
RMSNorm, QK-norm, ReLU^2 and soft cap) and nanochat's gpt.py (no biases, no gains), on
the same weights."""

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from mlx.utils import tree_flatten, tree_map, tree_unflatten  # noqa: E402

from mlx_gpt.model.gpt import GPT, GPTConfig  # noqa: E402

SIZE = dict(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=64, dropout=0.0)
# Track 3's variant (biases everywhere, RMSNorm gains, its fixed attention scale) and
# nanochat's (neither, the default scale).
TRACK3 = GPTConfig(**SIZE, architecture="modern", qk_norm=True, softcap=15.0,
                   activation="relu2", bias=True, qkv_bias=True, norm_gains=True,
                   attn_scale=0.12)  # fmt: skip
NANOCHAT = GPTConfig(**SIZE, architecture="modern", qk_norm=True, softcap=15.0,
                     activation="relu2", bias=False)  # fmt: skip


def rotary(x_BTHD, head_dim):
    """track 3's Rotary.forward: half-truncated RoPE, base 1024."""
    angular_freq = (1 / 1024) ** torch.linspace(0, 1, steps=head_dim // 4, dtype=torch.float32)
    angular_freq = torch.cat([angular_freq, angular_freq.new_zeros(head_dim // 4)])
    pos = torch.arange(x_BTHD.size(1), dtype=torch.float32)
    theta = torch.outer(pos, angular_freq)[None, :, None, :]
    cos, sin = theta.cos(), theta.sin()
    x1, x2 = x_BTHD.to(dtype=torch.float32).chunk(2, dim=-1)
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat((y1, y2), 3).type_as(x_BTHD)


def torch_logits(w: dict, c: GPTConfig, idx):
    """The forward pass of track 3's GPT (nanochat's where it has no gains or biases),
    with our parameter names; the fused c_attn is its q, k and v stacked by rows."""
    eps, C, H = c.norm_eps, c.n_embd, c.n_head
    D = C // H

    def norm(x, name=None):
        return F.rms_norm(x, (x.size(-1),), weight=w.get(f"{name}.weight"), eps=eps)

    def linear(x, name):
        return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))

    B, T = idx.shape
    x = norm(F.embedding(idx, w["wte.weight"]), "ln_wte")
    for i in range(c.n_layer):
        q, k, v = linear(norm(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn").split(C, dim=-1)
        q, k, v = (z.view(B, T, H, D) for z in (q, k, v))
        q, k = F.rms_norm(q, (D,), eps=eps), F.rms_norm(k, (D,), eps=eps)
        q, k = rotary(q, D), rotary(k, D)
        scale = c.attn_scale or D**-0.5
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale, is_causal=True
        ).transpose(1, 2)
        x = x + linear(y.contiguous().view(B, T, C), f"h.{i}.attn.c_proj")
        h = linear(norm(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc")
        x = x + linear(h.relu().square(), f"h.{i}.mlp.c_proj")
    logits = linear(norm(x, "ln_f"), "lm_head").float()
    return 15 * logits * (logits.square() + 15**2).rsqrt()


def random_weights(model: GPT, seed: int) -> None:
    """Every parameter random, gains around 1: the init's zero projections would leave
    the blocks out of the comparison."""
    key = iter(mx.random.split(mx.random.key(seed), 200))
    flat = tree_flatten(model.parameters())
    model.update(
        tree_unflatten(
            [
                (k, (1.0 if k.endswith("ln_1.weight") or "ln_" in k else 0.0)
                 + 0.3 * mx.random.normal(p.shape, key=next(key)))
                for k, p in flat
            ]
        )
    )  # fmt: skip


@pytest.mark.parametrize("config", [TRACK3, NANOCHAT], ids=["track3", "nanochat"])
def test_modern_logits_equal_the_pytorch_block(config):
    mx.random.seed(0)
    model = GPT(config)
    random_weights(model, 1)
    names = {k for k, _ in tree_flatten(model.parameters())}
    assert "wpe.weight" not in names  # no position table
    assert ("h.0.attn.c_attn.bias" in names) == config.bias
    assert ("ln_f.weight" in names) == config.norm_gains
    idx = mx.random.randint(0, 65, (2, 32), key=mx.random.key(2))
    ours = np.array(model(idx))
    weights = {k: torch.tensor(np.array(v)) for k, v in tree_flatten(model.parameters())}
    theirs = torch_logits(weights, config, torch.tensor(np.array(idx)).long()).numpy()
    assert np.abs(ours).max() > 1.0  # the logits say something
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_the_init_zeroes_the_projections_and_the_head():
    mx.random.seed(0)
    model = GPT(GPTConfig(**SIZE, architecture="modern", zero_init=True))
    flat = dict(tree_flatten(model.parameters()))
    for name, p in flat.items():
        zero = name.endswith(("c_proj.weight", "lm_head.weight")) or name.endswith("bias")
        assert (float(mx.abs(p).max()) == 0.0) == zero, name
    # the speedrun's init elsewhere: N(0, 1) embedding rows, PyTorch's variance in Linears
    assert abs(float(flat["wte.weight"].std()) - 1.0) < 0.05
    fc = flat["h.0.mlp.c_fc.weight"]
    assert abs(float(fc.std()) - (0.33 / 64) ** 0.5) < 0.005
    # so the untrained model says each token is equally likely
    logits = model(mx.array([[1, 2, 3]]))
    assert float(mx.abs(logits).max()) == 0.0


def test_rope_scores_depend_on_the_distance_alone():
    from mlx_gpt.model.rope import rotate

    q, k = mx.random.normal((1, 1, 1, 16)), mx.random.normal((1, 1, 1, 16))

    def score(m, n):
        return float((rotate(q, mx.array([m])) * rotate(k, mx.array([n]))).sum())

    assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-5)
    assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)


def test_bf16_compute_on_the_modern_block_stays_near_float32():
    from mlx_gpt.training.step import value_and_grad

    mx.random.seed(0)
    model = GPT(NANOCHAT)
    random_weights(model, 3)
    x = mx.random.randint(0, 65, (2, 32), key=mx.random.key(4))
    loss32, grads32 = value_and_grad(model, mx.float32)(model, x, x)
    loss16, grads16 = value_and_grad(model, mx.bfloat16)(model, x, x)
    assert abs(float(loss16) - float(loss32)) < 0.05 * float(loss32)
    dtypes = {g.dtype for g in tree_map(lambda g: g, [v for _, v in tree_flatten(grads16)])}
    assert dtypes == {mx.float32}  # the gradients reach the float32 weights as float32
