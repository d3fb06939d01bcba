import json

import pytest

from mlx_gpt.config import PRESETS, TrainConfig, preset_config
from mlx_gpt.errors import UserError
from mlx_gpt.settings import resolve


def test_lecture_preset_is_gpt_py():
    cfg = preset_config("lecture")
    assert (cfg.batch_size, cfg.block_size, cfg.max_iters) == (64, 256, 5000)
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.dropout) == (6, 6, 384, 0.2)
    assert (cfg.learning_rate, cfg.weight_decay, cfg.eval_interval, cfg.eval_iters) == (
        3e-4,
        0.01,
        500,
        200,
    )
    assert cfg.seed == 1337 and cfg.lr_decay_iters == 0 and cfg.grad_clip == 0


def test_small_preset_is_nanogpt_cpu_recipe():
    cfg = preset_config("small")
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, cfg.batch_size) == (
        4,
        4,
        128,
        64,
        12,
    )
    assert (cfg.max_iters, cfg.lr_decay_iters, cfg.dropout, cfg.learning_rate) == (
        2000,
        2000,
        0.0,
        1e-3,
    )
    assert cfg.decay_matrices_only and cfg.grad_clip == 1.0 and cfg.beta2 == 0.99


def test_every_preset_is_valid():
    for name in PRESETS:
        preset_config(name).validate()


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
