"""MLX against the PyTorch baseline from identical weights: what catches an inverted
causal mask, a missing AdamW bias correction, a wrong loss reduction or a wrong init."""

import mlx.core as mx
import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402
from torch_gpt import TorchGPT, lr_at, make_optimizer  # noqa: E402

from mlx_gpt.config import TrainConfig  # noqa: E402
from mlx_gpt.model.gpt import GPT  # noqa: E402
from mlx_gpt.presets import preset_config  # noqa: E402
from mlx_gpt.training.optimizer import make_optimizer as make_mlx_optimizer  # noqa: E402
from mlx_gpt.training.step import make_train_step  # noqa: E402

SIZE = dict(block_size=32, n_layer=2, n_head=4, n_embd=64, dropout=0.0)


def twins(cfg: TrainConfig, attention="sdpa"):
    mx.random.seed(0)
    mlx_model = GPT(cfg.model_config(vocab_size=65))
    torch_model = TorchGPT(vocab_size=65, attention=attention, **SIZE)
    weights = {k: torch.tensor(np.array(v)) for k, v in tree_flatten(mlx_model.parameters())}
    torch_model.load_state_dict(weights, strict=True)  # same names, same shapes
    return mlx_model, torch_model


def batch(seed, b=4, t=32):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 65, (b, t)), rng.integers(0, 65, (b, t))


@pytest.mark.parametrize("attention", ["gptpy", "sdpa"])
def test_logits_match_from_identical_weights(attention):
    mlx_model, torch_model = twins(TrainConfig(**SIZE), attention)
    mlx_model.eval()
    torch_model.eval()
    x, _ = batch(0)
    ours = np.array(mlx_model(mx.array(x)))
    with torch.no_grad():
        theirs = torch_model(torch.tensor(x)).numpy()
    assert np.abs(ours - theirs).max() < 1e-4


def test_torch_init_matches_ours_in_distribution():
    torch.manual_seed(0)
    w = TorchGPT(vocab_size=65, **SIZE).h[0].mlp.c_fc.weight.detach().numpy()
    assert abs(w.std() - 0.02) < 0.002


@pytest.mark.parametrize("preset", ["lecture", "nanogpt"])
def test_five_training_steps_match(preset):
    cfg = TrainConfig.from_dict({**preset_config(preset).to_dict(), **SIZE})
    if preset == "nanogpt":  # squeeze warm-up and decay into the five steps
        cfg.warmup_iters, cfg.lr_decay_iters = 2, 5
    mlx_model, torch_model = twins(cfg)
    mlx_model.train()
    torch_model.train()
    optimizer = make_mlx_optimizer(cfg)
    optimizer.init(mlx_model.trainable_parameters())
    step = make_train_step(mlx_model, optimizer, cfg.grad_clip)
    torch_opt = make_optimizer(
        torch_model,
        cfg.learning_rate,
        (cfg.beta1, cfg.beta2),
        cfg.weight_decay,
        cfg.decay_matrices_only,
    )
    mlx_losses, torch_losses = [], []
    for i in range(5):
        x, y = batch(1)  # the same batch: the loss must fall
        loss = step(mx.array(x), mx.array(y))
        mx.eval(loss, mlx_model.state, optimizer.state)
        mlx_losses.append(loss.item())

        for group in torch_opt.param_groups:
            group["lr"] = lr_at(
                i, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr
            )
        logits = torch_model(torch.tensor(x))
        tl = F.cross_entropy(logits.view(-1, 65), torch.tensor(y).view(-1))
        torch_opt.zero_grad()
        tl.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(torch_model.parameters(), cfg.grad_clip)
        torch_opt.step()
        torch_losses.append(tl.item())
    np.testing.assert_allclose(mlx_losses, torch_losses, atol=1e-4)
    assert mlx_losses[-1] < mlx_losses[0] - 0.01  # the steps did something
    # Parameters: Adam's first updates are lr * g / |g| per element, so an element whose
    # gradient is at float-noise level (a ReLU unit dead for nearly every input) moves by
    # +-lr on the noise; about 0.1 % of elements do here. All others agree within 1e-4.
    # A missing bias correction or wrong decay moves nearly every element (caught below).
    theirs = dict(torch_model.named_parameters())
    lr_sum = sum(
        lr_at(i, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr)
        for i in range(5)
    )
    close = total = 0
    for name, p in tree_flatten(mlx_model.parameters()):
        diff = np.abs(np.array(p) - theirs[name].detach().numpy())
        assert diff.max() <= 2 * lr_sum, name
        close += int((diff <= 1e-4).sum())
        total += diff.size
    assert close / total > 0.997, f"{total - close} of {total} parameters differ by > 1e-4"
    # and the learning rate followed the same schedule
    assert optimizer.learning_rate.item() == pytest.approx(torch_opt.param_groups[0]["lr"])
