import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_gpt.model.gpt import GPT
from mlx_gpt.presets import preset_config
from mlx_gpt.runs import checkpoint
from mlx_gpt.training.optimizer import make_optimizer


def _model_and_optimizer(seed):
    mx.random.seed(seed)
    cfg = preset_config("tiny")
    model = GPT(cfg.model_config(vocab_size=65))
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    return model, optimizer


def _weights(model):
    return np.array(model.lm_head.weight)


def test_round_trip(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    checkpoint.save(tmp_path / "latest", model, optimizer, {"step": 7})
    found = checkpoint.resolve(tmp_path / "latest")
    assert found == tmp_path / "latest" and checkpoint.load_state(found)["step"] == 7
    other, other_opt = _model_and_optimizer(1)
    checkpoint.load_model(found, other)
    checkpoint.load_optimizer(found, other_opt)
    assert np.array_equal(_weights(other), _weights(model))
    assert set(other_opt.state) == set(optimizer.state)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.old"))


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, optimizer = _model_and_optimizer(0)
    checkpoint.save(tmp_path / "latest", model, optimizer, {"step": 1})
    newer, newer_opt = _model_and_optimizer(2)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies half-way through the new checkpoint

    monkeypatch.setattr(checkpoint, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path / "latest", newer, newer_opt, {"step": 2})
    found = checkpoint.resolve(tmp_path / "latest")
    assert checkpoint.load_state(found)["step"] == 1
    fresh, _ = _model_and_optimizer(3)
    checkpoint.load_model(found, fresh)
    assert np.array_equal(_weights(fresh), _weights(model))


def test_killed_between_the_two_renames_falls_back_to_old(tmp_path):
    model, optimizer = _model_and_optimizer(0)
    checkpoint.save(tmp_path / "latest", model, optimizer, {"step": 3})
    (tmp_path / "latest").rename(tmp_path / "latest.old")  # the moment between renames
    found = checkpoint.resolve(tmp_path / "latest")
    assert found == tmp_path / "latest.old"
    assert json.loads((found / "state.json").read_text())["step"] == 3
    # the next save completes the swap and cleans up
    checkpoint.save(tmp_path / "latest", model, optimizer, {"step": 4})
    assert checkpoint.resolve(tmp_path / "latest") == tmp_path / "latest"
    assert not (tmp_path / "latest.old").exists()


def test_nothing_to_resolve(tmp_path):
    assert checkpoint.resolve(tmp_path / "best") is None
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "state.json").write_text("{}")  # no weights: not a checkpoint
    assert checkpoint.resolve(tmp_path / "best") is None
