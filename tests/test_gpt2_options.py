"""The GPT-2 options of the model (activation, qkv_bias, bias, tie_embeddings), its
parameter counts, the tied head, GPT-2's init, and parity with the PyTorch baseline."""

import math
from dataclasses import replace

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_gpt.config import TrainConfig
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.presets import preset_config
from mlx_gpt.training.optimizer import make_optimizer
from mlx_gpt.training.step import make_train_step

TINY = dict(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
GPT2 = dict(activation="gelu_tanh", qkv_bias=True, tie_embeddings=True)
OPTION_SETS = {
    "gpt2": GPT2,
    "nanogpt-bias-false": dict(activation="gelu", bias=False, tie_embeddings=True),
    "untied-gelu-tanh-qkv": dict(activation="gelu_tanh", qkv_bias=True),
    "bias-false-untied": dict(bias=False),
}


def params(model) -> dict[str, mx.array]:
    return dict(tree_flatten(model.parameters()))


def test_parameter_counts():
    assert GPT(preset_config("lecture").model_config(65)).num_params() == 10_788_929
    # GPT-2 small with its 50,257 tokens, tied: 124,439,808 (the Hugging Face count); the
    # preset pads wte to 50,304 rows as build-nanogpt does, 47 x 768 more.
    gpt2 = preset_config("gpt2")
    assert GPT(replace(gpt2, vocab_multiple=1).model_config(50_257)).num_params() == 124_439_808
    padded = GPT(gpt2.model_config(50_257))
    assert padded.wte.weight.shape == (50_304, 768)
    assert padded.num_params() == 124_439_808 + 47 * 768


def test_lecture_bpe_preset_is_the_lecture_with_gpt2_options():
    lecture, bpe = preset_config("lecture"), preset_config("lecture-bpe")
    assert (bpe.tokenizer, bpe.vocab_size) == ("bpe", 1024)
    assert (bpe.activation, bpe.qkv_bias, bpe.tie_embeddings) == ("gelu_tanh", True, True)
    for name in ("n_layer", "n_head", "n_embd", "block_size", "learning_rate", "max_iters"):
        assert getattr(bpe, name) == getattr(lecture, name)


def test_bias_false_has_no_bias_anywhere():
    names = params(GPT(GPTConfig(**TINY, bias=False, qkv_bias=True)))
    assert names and not [n for n in names if n.endswith("bias")]
    lecture = params(GPT(GPTConfig(**TINY)))
    assert "h.0.attn.c_attn.bias" not in lecture and "lm_head.bias" in lecture
    assert "h.0.attn.c_attn.bias" in params(GPT(GPTConfig(**TINY, qkv_bias=True)))


def test_tied_head_reads_wte_and_is_trained_through_it():
    # weight decay 0: in the untied model, wte rows of tokens absent from the batch get
    # no gradient; tied, the head's gradient reaches every row
    cfg = TrainConfig(**{k: v for k, v in TINY.items() if k != "vocab_size"}, weight_decay=0.0)
    absent = np.arange(50, 97)
    x = mx.array(np.random.default_rng(0).integers(0, 50, (4, 16)))
    for tied in (True, False):
        cfg.tie_embeddings = tied
        mx.random.seed(0)
        model = GPT(cfg.model_config(97))
        before = np.array(model.wte.weight)
        optimizer = make_optimizer(cfg)
        optimizer.init(model.trainable_parameters())
        model.train()
        step = make_train_step(model, optimizer, 0.0)
        mx.eval(step(x, x), model.state, optimizer.state)
        moved = np.abs(np.array(model.wte.weight) - before)[absent].max()
        assert ("lm_head.weight" in params(model)) is not tied
        if tied:
            assert moved > 1e-4
            model.eval()
            h = model.wpe(mx.arange(16)) + model.wte(x)
            for block in model.h:
                h = block(h)
            expected = model.ln_f(h) @ model.wte.weight.T  # the trained wte, as the head
            assert np.abs(np.array(model(x) - expected)).max() < 1e-5
        else:
            assert moved == 0.0


def test_gpt2_init_scales_the_residual_projections():
    mx.random.seed(0)
    config = GPTConfig(**{**TINY, "n_embd": 256, "n_layer": 8}, **GPT2)
    p = params(GPT(config))
    scaled = 0.02 / math.sqrt(2 * 8)
    for name in ("h.3.attn.c_proj.weight", "h.5.mlp.c_proj.weight"):
        assert np.std(np.array(p[name])) == pytest.approx(scaled, rel=0.05)
    for name in ("wte.weight", "wpe.weight", "h.3.mlp.c_fc.weight", "h.0.attn.c_attn.weight"):
        assert np.std(np.array(p[name])) == pytest.approx(0.02, rel=0.05)
    assert not np.array(p["h.0.attn.c_attn.bias"]).any()
    mx.random.seed(0)  # untied (the lecture): every projection at 0.02
    lecture = params(GPT(GPTConfig(**{**TINY, "n_embd": 256, "n_layer": 8})))
    assert np.std(np.array(lecture["h.3.attn.c_proj.weight"])) == pytest.approx(0.02, rel=0.05)


ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "gelu_tanh": nn.gelu_approx}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_the_mlp_applies_the_activation_it_is_configured_with(name):
    from mlx_gpt.model.gpt import MLP

    mx.random.seed(0)
    mlp = MLP(GPTConfig(**{**TINY, "activation": name}))
    x = mx.random.normal((2, 5, TINY["n_embd"])) * 3
    out = np.array(mlp(x))
    for other, reference in ACTIVATIONS.items():  # its own, and none of the others
        gap = np.abs(out - np.array(mlp.c_proj(reference(mlp.c_fc(x))))).max()
        assert gap < 1e-6 if other == name else gap > 1e-4, (other, gap)


@pytest.mark.parametrize("bad", [dict(activation="swish"), dict(tokenizer="words")])
def test_nonsense_options_are_refused(bad):
    from mlx_gpt.errors import UserError

    with pytest.raises(UserError, match="must be one of"):
        TrainConfig(**bad).validate()


# ---- parity with the PyTorch baseline (bench/torch_gpt.py) ----


def twins(options: dict):
    torch = pytest.importorskip("torch")
    from torch_gpt import TorchGPT

    mx.random.seed(0)
    mlx_model = GPT(GPTConfig(**TINY, **options))
    torch_model = TorchGPT(**TINY, **options)
    weights = {k: torch.tensor(np.array(v)) for k, v in params(mlx_model).items()}
    torch_model.load_state_dict(weights, strict=True)  # same names, same shapes
    return mlx_model, torch_model


@pytest.mark.parametrize("name", OPTION_SETS)
def test_logits_match_pytorch(name):
    torch = pytest.importorskip("torch")
    mlx_model, torch_model = twins(OPTION_SETS[name])
    mlx_model.eval()
    torch_model.eval()
    x = np.random.default_rng(1).integers(0, 97, (3, 16))
    ours = np.array(mlx_model(mx.array(x)))
    with torch.no_grad():
        theirs = torch_model(torch.tensor(x)).numpy()
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("name", ["gpt2", "nanogpt-bias-false"])
def test_training_steps_match_pytorch(name):
    # the tied matrix gets both gradients (embedding and head) in both frameworks
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from torch_gpt import make_optimizer as make_torch_optimizer

    mlx_model, torch_model = twins(OPTION_SETS[name])
    cfg = TrainConfig(**{k: v for k, v in TINY.items() if k != "vocab_size"}, learning_rate=1e-3)
    optimizer = make_optimizer(cfg)
    optimizer.init(mlx_model.trainable_parameters())
    mlx_model.train()
    step = make_train_step(mlx_model, optimizer, 0.0)
    torch_opt = make_torch_optimizer(torch_model, 1e-3, (cfg.beta1, cfg.beta2), 0.01, False)
    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 97, (4, 16)), rng.integers(0, 97, (4, 16))
    ours, theirs = [], []
    for _ in range(4):
        loss = step(mx.array(x), mx.array(y))
        mx.eval(loss, mlx_model.state, optimizer.state)
        ours.append(loss.item())
        tl = F.cross_entropy(torch_model(torch.tensor(x)).view(-1, 97), torch.tensor(y).view(-1))
        torch_opt.zero_grad()
        tl.backward()
        torch_opt.step()
        theirs.append(tl.item())
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert ours[-1] < ours[0] - 0.01
    wte = np.array(mlx_model.wte.weight)
    assert np.abs(wte - torch_model.wte.weight.detach().numpy()).max() < 1e-4
