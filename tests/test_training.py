import os
import signal
import warnings
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from mlx_gpt.config import ARCHITECTURES, TrainConfig
from mlx_gpt.metrics import read_metrics
from mlx_gpt.model.gpt import GPT
from mlx_gpt.presets import preset_config
from mlx_gpt.training import Loop, prepare
from mlx_gpt.training.optimizer import make_optimizer
from mlx_gpt.training.step import make_train_step


def _model_and_optimizer(cfg: TrainConfig):
    mx.random.seed(cfg.seed)
    model = GPT(cfg.model_config(vocab_size=65))
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    model.train()
    return model, optimizer


def test_tiny_model_overfits_one_batch():
    cfg = TrainConfig(
        n_layer=2, n_head=2, n_embd=64, block_size=32, dropout=0.0, learning_rate=3e-3
    )
    model, optimizer = _model_and_optimizer(cfg)
    step = make_train_step(model, optimizer, grad_clip=0.0)
    x = mx.random.randint(0, 65, (4, 32))
    y = mx.random.randint(0, 65, (4, 32))
    losses = []
    for _ in range(150):
        loss = step(x, y)
        mx.eval(loss, model.state, optimizer.state)
        losses.append(loss.item())
    assert losses[0] > 4.0
    assert losses[-1] < 0.1  # random targets: only memorising gets here


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_compiled_step_matches_uncompiled(preset):
    # tiny has dropout on (the compiled step must thread the random state the same way);
    # small has warm-up, cosine decay, clipping and matrix-only decay.
    cfg = preset_config(preset)
    losses = {}
    for compiled in (True, False):
        model, optimizer = _model_and_optimizer(cfg)
        step = make_train_step(model, optimizer, cfg.grad_clip, compile=compiled)
        rng = np.random.default_rng(0)
        out = []
        for _ in range(6):
            x = mx.array(rng.integers(0, 65, (cfg.batch_size, cfg.block_size)))
            y = mx.array(rng.integers(0, 65, (cfg.batch_size, cfg.block_size)))
            loss = step(x, y)
            mx.eval(loss, model.state, optimizer.state)
            out.append(loss.item())
        losses[compiled] = out
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    assert len(set(losses[True])) == 6  # it did train


def _losses(records):
    keys = ("train_loss", "val_loss", "eval_train_loss", "lr", "tokens")
    return {r["step"]: {k: r[k] for k in keys if k in r} for r in records if "event" not in r}


def _tiny(recipe: str) -> TrainConfig:
    """tiny, or tiny with the modern block, Muon and wsd (whose state is Muon's momentum
    and four AdamWs' moments, and whose rate depends on the step)."""
    cfg = preset_config("tiny")
    if recipe == "speedrun":
        speedrun = {**ARCHITECTURES["modern"], "optimizer": "muon", "schedule": "wsd"}
        cfg = replace(cfg, **speedrun, cooldown_frac=0.5, embedding_lr=0.01, scalar_lr=0.01)
    return cfg


@pytest.mark.parametrize("recipe", ["tiny", "speedrun"])
def test_stop_and_resume_equals_straight_through(tmp_path, recipe):
    straight = _tiny(recipe)
    straight.out_dir = str(tmp_path / "straight")
    Loop(prepare(straight)).run()

    stopped = _tiny(recipe)
    stopped.out_dir = str(tmp_path / "stopped")

    def ctrl_c_at_step_35(record):
        if record["step"] == 35:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends

    result = Loop(prepare(stopped), [ctrl_c_at_step_35]).run()
    assert result.stopped == "interrupted" and result.step == 35
    assert max(r["step"] for r in read_metrics(tmp_path / "stopped" / "metrics.jsonl")) == 35

    resumed = Loop(prepare(stopped, resume=True)).run()
    assert resumed.stopped == "finished" and resumed.step == straight.max_iters
    a = _losses(read_metrics(tmp_path / "straight" / "metrics.jsonl"))
    b = _losses(read_metrics(tmp_path / "stopped" / "metrics.jsonl"))
    assert a.keys() == b.keys()
    for step in a:
        assert a[step].keys() == b[step].keys(), step
        for key, value in a[step].items():
            assert b[step][key] == pytest.approx(value, rel=1e-6), (step, key)


def test_resume_after_a_kill_rewrites_metrics_past_the_checkpoint(tmp_path):
    cfg = preset_config("tiny")
    cfg.out_dir = str(tmp_path / "run")
    cfg.max_iters = 30
    Loop(prepare(cfg)).run()
    metrics = tmp_path / "run" / "metrics.jsonl"
    # A kill after step 30's checkpoint leaves later records and a half-written line.
    with open(metrics, "a") as f:
        f.write('{"step": 35, "tokens": 1, "train_loss": 9.9}\n{"step": 40, "tra')
    cfg.max_iters = 50
    with pytest.warns(UserWarning, match="damaged"):  # the half-written line is reported
        Loop(prepare(cfg, resume=True)).run()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a damaged line left behind would raise here
        records = read_metrics(metrics)
    steps = [r["step"] for r in records]
    assert steps == sorted(set(steps)) and steps[-1] == 50
    assert next(r for r in records if r["step"] == 35)["train_loss"] != 9.9
