"""Muon against a PyTorch reference written from modded-nanogpt, and --optimizer muon's
parameter groups and schedule against track 3's train_gpt_simple.py."""

import math

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from mlx.utils import tree_flatten  # noqa: E402

from mlx_gpt.errors import UserError  # noqa: E402
from mlx_gpt.model.gpt import GPT  # noqa: E402
from mlx_gpt.presets import preset_config  # noqa: E402
from mlx_gpt.training.muon import Muon, newton_schulz  # noqa: E402
from mlx_gpt.training.optimizer import GROUPS, make_optimizer  # noqa: E402


def zeropower_via_newtonschulz5(G, steps=5):
    """modded-nanogpt's (records/track_1_short/2024-10-10_Muon/train_gpt2.py), in float32
    here instead of bfloat16."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.float()
    X /= X.norm() + 1e-7
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


def torch_muon_step(p, grad, momentum, lr, wd, mu=0.95, blocks=1):
    """One step of track 3's Muon.step on one parameter: its muon_update (Nesterov
    momentum by lerp), the shape scale, decoupled weight decay. A weight of `blocks`
    stacked matrices is the speedrun's separate q, k, v: each is updated alone."""
    momentum.lerp_(grad, 1 - mu)
    update = grad.lerp(momentum, mu)
    parts = []
    for u in update.chunk(blocks, dim=0):
        parts.append(zeropower_via_newtonschulz5(u) * max(1, u.size(-2) / u.size(-1)) ** 0.5)
    p.mul_(1 - lr * wd)
    p.add_(torch.cat(parts), alpha=-lr)


@pytest.mark.parametrize(
    ("shape", "blocks"), [((48, 16), 3), ((64, 16), 1), ((16, 64), 1), ((24, 24), 1)]
)
def test_muon_updates_as_the_pytorch_reference_over_several_steps(shape, blocks):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(shape).astype(np.float32)
    grads = [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]
    lrs = [0.02, 0.015, 0.01, 0.005]  # a schedule: the rate of each step is its own
    schedule = iter(lrs)

    ours = Muon(lambda step: mx.array(lrs[int(step.item())]), weight_decay=0.05, blocks=blocks)
    params = {"w": mx.array(p0)}
    ours.init(params)
    p, momentum = torch.tensor(p0), torch.zeros(shape)
    for g in grads:
        params = ours.apply_gradients({"w": mx.array(g)}, params)
        torch_muon_step(p, torch.tensor(g), momentum, next(schedule), 0.05, blocks=blocks)
        mx.eval(params)
        np.testing.assert_allclose(np.array(params["w"]), p.numpy(), atol=1e-5, rtol=0)
        np.testing.assert_allclose(np.array(ours.state["w"]["v"]), momentum.numpy(), atol=1e-6)
    assert not np.allclose(np.array(params["w"]), p0, atol=1e-3)  # it moved


@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (32, 32)])
def test_the_orthogonalized_update_has_singular_values_near_one(shape):
    # A gradient's small scale, its singular values spread over a factor of 10.
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((shape[0], min(shape))))
    v, _ = np.linalg.qr(rng.standard_normal((shape[1], min(shape))))
    g = (u * np.geomspace(1e-2, 1e-3, min(shape))) @ v.T
    s = np.linalg.svd(np.array(newton_schulz(mx.array(g.astype(np.float32)))), compute_uv=False)
    # The quintic iteration is tuned for speed: it lands every singular value in a band
    # around 1, not on 1 (Keller Jordan's "Muon" post: about 0.7 to 1.2).
    assert s.min() > 0.6 and s.max() < 1.25, s


# track 3's records/track_3_optimization/train_gpt_simple.py, value by value: the groups
# of its AdamW (optimizer1) and Muon (optimizer2), their settings, and set_hparams.
TRACK3_TRAIN_STEPS, TRACK3_COOLDOWN_FRAC = 3250, 0.7
TRACK3_ADAMW = dict(betas=(0.8, 0.95), eps=1e-10, weight_decay=0.001)
TRACK3_LRS = {"embedding": 0.7, "unembedding": 0.004, "scalar": 0.015, "matrix": 0.025}
TRACK3_MUON = dict(weight_decay=0.05, momentum=0.95)


def track3_group(name: str, p) -> str:
    """Which of track 3's groups holds the parameter our model calls `name`."""
    if name.startswith("h.") and p.ndim >= 2:
        return "matrix"  # [p for p in model.blocks.parameters() if p.ndim >= 2]
    if name == "wte.weight":
        return "embedding"  # model.embed.weight
    if name == "lm_head.weight":
        return "unembedding"  # model.proj.weight
    assert p.ndim < 2, name
    return "scalar"  # [p for p in model.parameters() if p.ndim < 2]


def track3_eta(step: int) -> float:
    progress = step / TRACK3_TRAIN_STEPS
    if progress < 1 - TRACK3_COOLDOWN_FRAC:
        return 1.0
    return (1 - progress) / TRACK3_COOLDOWN_FRAC


def test_gpt2_speedrun_has_track_3s_parameter_groups_and_schedule():
    cfg = preset_config("gpt2-speedrun")
    model = GPT(cfg.model_config(50257))  # lazy: nothing of its 124M is computed
    optimizer = make_optimizer(cfg)
    params = dict(tree_flatten(model.trainable_parameters()))
    assert model.config.vocab_size == 50304 and model.config.n_head == 6  # heads of 128
    # Every parameter in exactly one group, the group track 3 gives it.
    split = optimizer._split_dictionary(model.trainable_parameters())
    seen = {}
    for group, tree in zip(GROUPS, split, strict=True):
        for name, _ in tree_flatten(tree):
            assert name not in seen
            seen[name] = group
    assert seen.keys() == params.keys()
    for name, group in seen.items():
        assert track3_group(name, params[name]) == group.replace("matrix_qkv", "matrix"), name
    assert {g for g in seen.values()} == set(GROUPS)  # biases and gains: a scalar group
    for group, opt in zip(GROUPS, optimizer.optimizers, strict=True):
        base = group.replace("matrix_qkv", "matrix")
        if base == "matrix":
            assert isinstance(opt, Muon)
            assert (opt.weight_decay, opt.momentum) == tuple(TRACK3_MUON.values())
            assert opt.nesterov
        else:
            assert tuple(opt.betas) == TRACK3_ADAMW["betas"]
            assert opt.eps == TRACK3_ADAMW["eps"]
            assert opt.weight_decay == TRACK3_ADAMW["weight_decay"]
            assert not opt.decay_matrices_only  # track 3's AdamW decays its 1-D group too
        schedule = opt._schedulers["learning_rate"]
        for step in (0, 974, 975, 976, 2000, 3249):
            want = TRACK3_LRS[base] * track3_eta(step)
            assert float(schedule(mx.array(step))) == pytest.approx(want, rel=1e-5), (group, step)
    assert cfg.max_iters == TRACK3_TRAIN_STEPS and cfg.grad_clip == 0
    assert cfg.batch_size * cfg.block_size == 8 * 64 * 1024  # track 3's batch_size in tokens


def test_muon_with_no_matrices_inside_blocks_is_a_user_error():
    cfg = preset_config("small-speedrun")
    optimizer = make_optimizer(cfg)
    no_blocks = {"wte": {"weight": mx.zeros((10, 4))}, "lm_head": {"weight": mx.zeros((10, 4))}}
    with pytest.raises(UserError, match="--optimizer adamw"):
        optimizer.init(no_blocks)


def test_an_empty_momentum_and_zero_gradient_leave_muon_at_decay_alone():
    # Zero-initialized projections get a zero gradient on the first step of some
    # layers: the orthogonalized zero is zero, not a division by zero.
    opt = Muon(0.02, weight_decay=0.5)
    params = {"w": mx.ones((8, 4))}
    opt.init(params)
    new = opt.apply_gradients({"w": mx.zeros((8, 4))}, params)["w"]
    assert np.all(np.isfinite(np.array(new)))
    np.testing.assert_allclose(np.array(new), 1 - 0.02 * 0.5, rtol=1e-6)
    assert math.isclose(float(new[0, 0]), 0.99, rel_tol=1e-6)
