import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mlx_gpt.config import TrainConfig
from mlx_gpt.data.tokens import get_batch
from mlx_gpt.errors import UserError
from mlx_gpt.metrics import read_metrics
from mlx_gpt.presets import PRESETS, preset_config
from mlx_gpt.settings import resolve
from mlx_gpt.training import prepare

TRAIN = str(Path(__file__).resolve().parents[1] / "train.py")


def _one_step_run(cli, tmp_path, preset: str) -> tuple[dict, list[dict], str]:
    """One optimizer step of a preset through train.py, with one evaluation batch: what
    the run recorded (config.json's settings, the metrics) and what it printed."""
    out = tmp_path / preset
    result = cli(
        TRAIN, "--preset", preset, "--max-iters", "1", "--eval-iters", "1", "--out-dir", str(out)
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    return config, read_metrics(out / "metrics.jsonl"), result.stdout


# gpt.py's hyperparameters and model, as the lecture's script sets them.
GPT_PY = dict(batch_size=64, block_size=256, eval_interval=500, learning_rate=3e-4)
GPT_PY_MODEL = dict(n_embd=384, n_head=6, n_layer=6, dropout=0.2, vocab_size=65)


def test_a_lecture_start_builds_gpt_py_model_and_optimizer(tmp_path):
    cfg = preset_config("lecture")
    cfg.out_dir = str(tmp_path / "lecture")
    start = prepare(cfg)  # reads and builds, writes nothing
    assert start.model.num_params() == 10_788_929  # gpt.py prints 10.788929 M parameters
    assert GPT_PY_MODEL.items() <= vars(start.model.config).items()
    optimizer = start.optimizer
    assert optimizer.learning_rate.item() == pytest.approx(3e-4)
    assert optimizer.betas == [0.9, 0.999] and optimizer.weight_decay == 0.01
    assert not optimizer.decay_matrices_only  # torch.optim.AdamW decays every parameter
    x, y = get_batch(start.splits.train, cfg.batch_size, cfg.block_size, start.data_rng)
    assert x.shape == (64, 256) and y.shape == (64, 256)
    assert not (tmp_path / "lecture").exists()


@pytest.mark.slow  # two minutes on a 2-core AVX2 CPU: a step and two evaluations of gpt.py
def test_a_lecture_run_trains_with_gpt_py_settings(cli, tmp_path):
    config, records, stdout = _one_step_run(cli, tmp_path, "lecture")
    assert GPT_PY.items() <= config["train"].items()
    assert GPT_PY_MODEL.items() <= config["model"].items()
    assert config["model"]["activation"] == "relu" and not config["model"]["tie_embeddings"]
    # torch.optim.AdamW's defaults, on every parameter; no clipping, no schedule
    train = config["train"]
    assert (train["beta1"], train["beta2"], train["weight_decay"]) == (0.9, 0.999, 0.01)
    assert not train["decay_matrices_only"] and train["grad_clip"] == 0 and train["seed"] == 1337
    assert "10,788,929 parameters" in stdout  # gpt.py prints 10.788929 M parameters
    step = records[-1]
    assert step["step"] == 1 and step["tokens"] == 64 * 256 and step["lr"] == pytest.approx(3e-4)


def test_a_small_run_trains_with_nanogpts_cpu_recipe(cli, tmp_path):
    # nanoGPT's README: --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
    # --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0, on the
    # train_shakespeare_char.py recipe (lr 1e-3 to 1e-4, 100 warm-up steps, beta2 0.99).
    config, records, _ = _one_step_run(cli, tmp_path, "small")
    model, train = config["model"], config["train"]
    assert (model["n_layer"], model["n_head"], model["n_embd"], model["block_size"]) == (
        4, 4, 128, 64
    )  # fmt: skip
    assert model["dropout"] == 0.0 and train["batch_size"] == 12
    assert train["lr_decay_iters"] == 2000 and train["beta2"] == 0.99
    assert train["decay_matrices_only"] and train["grad_clip"] == 1.0
    step = records[-1]
    assert step["tokens"] == 12 * 64
    # nanoGPT's warm-up: the first update is made at lr * 1 / (warmup + 1)
    assert step["lr"] == pytest.approx(1e-3 / 101)


def build_nanogpt_lr(it: int) -> float:
    """train_gpt2.py's get_lr, as written there."""
    max_lr, min_lr, warmup_steps, max_steps = 6e-4, 6e-4 * 0.1, 715, 19073
    if it < warmup_steps:
        return max_lr * (it + 1) / warmup_steps
    if it > max_steps:
        return min_lr
    decay_ratio = (it - warmup_steps) / (max_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (max_lr - min_lr)


def test_the_gpt2_schedule_is_build_nanogpts_at_every_step():
    import mlx.core as mx

    from mlx_gpt.training.optimizer import lr_schedule

    steps = mx.arange(0, 19_100)
    ours = np.array(lr_schedule(preset_config("gpt2"))(steps))
    theirs = np.array([build_nanogpt_lr(int(i)) for i in range(19_100)])
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=0)
    # and nanoGPT's rule, the other presets', divides by one step more
    nanogpt = np.array(lr_schedule(replace(preset_config("gpt2"), warmup_rule="nanogpt"))(steps))
    np.testing.assert_allclose(nanogpt[:715], 6e-4 * np.arange(1, 716) / 716, rtol=2e-5)


def test_every_preset_is_valid_and_sets_each_setting_it_names():
    # from_dict ignores keys it does not know (old run folders load), so a misspelt key
    # in a preset would vanish silently and leave the default in its place.
    for name, settings in PRESETS.items():
        cfg = preset_config(name)
        cfg.validate()
        assert {k: getattr(cfg, k, "not a setting") for k in settings} == settings, name


def test_precedence_preset_then_file_then_flags(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"preset": "small", "n_layer": 3, "dropout": 0.1}))
    cfg = resolve(None, str(f), {"dropout": 0.05})
    assert cfg.preset == "small" and cfg.n_layer == 3 and cfg.dropout == 0.05
    assert cfg.n_embd == 128  # from the preset


def test_a_runs_config_json_is_a_valid_config_file(tmp_path):
    saved = {"mlx_gpt_version": "0", "command": [], "train": preset_config("tiny").to_dict()}
    f = tmp_path / "config.json"
    f.write_text(json.dumps(saved))
    assert resolve(None, str(f), {}) == preset_config("tiny")


def test_config_file_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        resolve(None, str(bad), {})
    bad.write_text(json.dumps({"n_layers": 3}))
    with pytest.raises(UserError, match="unknown keys: n_layers"):
        resolve(None, str(bad), {})


def test_from_dict_ignores_unknown_keys():
    assert TrainConfig.from_dict({"n_layer": 2, "future_option": 1}).n_layer == 2
