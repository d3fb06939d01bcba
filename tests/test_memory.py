"""Fitting a model in memory: bf16 compute on float32 weights, activation checkpointing,
and --micro-batch N|auto. Each gives the losses of the plain run, or close to them."""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten
from test_faults import one_line_error

from mlx_gpt.data.tokens import get_batch
from mlx_gpt.distributed.ranks import Ranks
from mlx_gpt.errors import UserError
from mlx_gpt.metrics import read_metrics
from mlx_gpt.runs import checkpoint
from mlx_gpt.settings import resolve
from mlx_gpt.training import Loop, micro, prepare
from mlx_gpt.training.step import build_step, value_and_grad

TRAIN = str(Path(__file__).resolve().parents[1] / "train.py")


def config(tmp_path, name: str, **overrides):
    settings = {"out_dir": str(tmp_path / name), "eval_interval": 10, "eval_iters": 2,
                "log_interval": 1, **overrides}  # fmt: skip
    return resolve("tiny", None, settings)


def train_losses(cfg) -> list[float]:
    Loop(prepare(cfg)).run()
    return [
        r["train_loss"] for r in read_metrics(cfg.run_dir / "metrics.jsonl") if "train_loss" in r
    ]


def dtypes(tree) -> set:
    return {a.dtype for _, a in tree_flatten(tree)}


def test_bf16_compute_keeps_float32_masters_and_loses_little(tmp_path):
    cfg = config(tmp_path, "bf16", dtype="bfloat16", max_iters=30)
    start = prepare(cfg)
    step = build_step(start.model, start.optimizer, cfg, Ranks())
    bf16 = []
    for _ in range(30):
        x, y = get_batch(start.splits.train, cfg.batch_size, cfg.block_size, start.data_rng)
        bf16.append(step(x, y))
        assert dtypes(start.model.parameters()) == {mx.float32}
        assert dtypes(start.optimizer.state) <= {mx.float32, mx.uint64}  # the step count
    fp32 = config(tmp_path, "fp32", max_iters=30)
    start32 = prepare(fp32)
    step32 = build_step(start32.model, start32.optimizer, fp32, Ranks())
    plain = [step32(*get_batch(start32.splits.train, 8, 32, start32.data_rng)) for _ in range(30)]
    assert np.abs(np.array(bf16) - np.array(plain)).max() < 0.05
    assert bf16 != plain  # the passes did run in bfloat16


def test_bf16_logits_reach_the_loss_as_float32_and_gradients_are_float32(tmp_path, monkeypatch):
    start = prepare(config(tmp_path, "bf16", dtype="bfloat16"))
    seen = []
    cross_entropy = nn.losses.cross_entropy

    def spy(logits, targets, **kwargs):
        seen.append(logits.dtype)
        return cross_entropy(logits, targets, **kwargs)

    monkeypatch.setattr(nn.losses, "cross_entropy", spy)
    x, y = get_batch(start.splits.train, 8, 32, start.data_rng)
    loss16, grads = value_and_grad(start.model, mx.bfloat16)(start.model, x, y)
    loss32, _ = value_and_grad(start.model, mx.float32)(start.model, x, y)
    assert seen == [mx.float32, mx.float32]
    assert dtypes(grads) == {mx.float32} and dtypes(start.model.parameters()) == {mx.float32}
    assert loss16.item() != loss32.item()


def test_bf16_checkpoints_hold_float32_and_resume_exactly(cli, tmp_path):
    flags = ["--preset", "tiny", "--dtype", "bfloat16", "--eval-interval", "10",
             "--eval-iters", "2", "--log-interval", "2"]  # fmt: skip
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert cli(TRAIN, *flags, "--max-iters", "20", "--out-dir", str(whole)).returncode == 0
    assert cli(TRAIN, *flags, "--max-iters", "10", "--out-dir", str(broken)).returncode == 0
    result = cli(TRAIN, "--resume", "--out-dir", str(broken), "--max-iters", "20")
    assert result.returncode == 0, result.stderr
    assert "compute bfloat16" in result.stdout
    for run in (whole, broken):
        weights = mx.load(str(checkpoint.resolve(run / "latest") / checkpoint.MODEL_FILE))
        assert {w.dtype for w in weights.values()} == {mx.float32}
    losses = [
        [
            (r["step"], r.get("train_loss"), r.get("val_loss"))
            for r in read_metrics(run / "metrics.jsonl")
        ]
        for run in (whole, broken)
    ]
    assert losses[0] == losses[1]


def test_activation_checkpointing_gives_the_same_gradients_and_losses(tmp_path):
    start = prepare(config(tmp_path, "grads", dropout=0.0))
    x, y = get_batch(start.splits.train, 8, 32, start.data_rng)
    loss_and_grad = value_and_grad(start.model)
    _, plain = loss_and_grad(start.model, x, y)
    start.model.checkpoint_blocks = True
    _, recomputed = loss_and_grad(start.model, x, y)
    for (name, a), (_, b) in zip(tree_flatten(plain), tree_flatten(recomputed), strict=True):
        assert np.allclose(np.array(a), np.array(b), atol=1e-5), name
    runs = [
        train_losses(
            config(tmp_path, f"ckpt-{on}", activation_checkpointing=on, dropout=0.0, max_iters=20)
        )
        for on in (False, True)
    ]
    assert np.abs(np.array(runs[0]) - np.array(runs[1])).max() < 1e-5


def test_micro_batch_auto_takes_the_largest_that_fits(tmp_path):
    cfg = config(tmp_path, "probe", batch_size=32, block_size=64, n_embd=64, dropout=0.0)
    start = prepare(cfg)
    peaks = {
        size: micro.measure(start.model, start.optimizer, cfg, Ranks(), start.splits, size)
        for size in micro.sizes(cfg, Ranks())
    }
    assert list(peaks) == [1, 2, 4, 8, 16, 32]
    assert peaks[4] < peaks[8]
    budget_gb = (peaks[4] + peaks[8]) / 2 / 1024**3  # room for 4, not for 8
    auto = config(tmp_path, "auto", batch_size=32, block_size=64, n_embd=64, dropout=0.0,
                  micro_batch="auto", max_memory=budget_gb, max_iters=20)  # fmt: skip
    chosen = prepare(auto)
    assert (chosen.micro_batch.size, chosen.cfg.grad_accum) == (4, 8)
    assert chosen.micro_batch.peak <= budget_gb * 1024**3
    explicit = config(tmp_path, "explicit", batch_size=32, block_size=64, n_embd=64,
                      dropout=0.0, grad_accum=8, max_iters=20)  # fmt: skip
    Loop(chosen).run()
    auto_losses = [
        r["train_loss"] for r in read_metrics(auto.run_dir / "metrics.jsonl") if "train_loss" in r
    ]
    assert np.abs(np.array(auto_losses) - np.array(train_losses(explicit))).max() < 1e-5
    saved = json.loads((auto.run_dir / "config.json").read_text())["train"]
    assert (saved["micro_batch"], saved["grad_accum"]) == ("auto", 8)


@pytest.mark.parametrize(
    "fixed_gb, per_sequence_gb, budget_gb, resident_gb, runs, chosen",
    [
        (1.0, 0.75, 6.4, 0.5, [1, 2, 4], 4),  # 8 is predicted at 7.00 GB from 2 and 4
        (2.5, 0.5, 5.0, 0.0, [1], 1),  # from one peak (3 GB) and nothing resident, 2 may be 6
        (2.5, 0.5, 5.0, 2.0, [1, 2, 4], 4),  # 2 GB resident: 2 is at most 4 GB, and is 3.5
        (0.5, 0.5, 40.0, 0.0, [1, 2, 4, 8, 16, 32], 32),  # everything fits
    ],
)
def test_micro_batch_auto_never_runs_a_size_predicted_over_the_budget(
    tmp_path, fixed_gb, per_sequence_gb, budget_gb, resident_gb, runs, chosen
):
    # On a Mac GPU a trial over the budget swaps rather than fail, so auto must predict.
    # Here a fake measure's peaks grow as a step's do: fixed + per sequence x micro-batch.
    cfg = config(tmp_path, "fake", batch_size=32, max_memory=budget_gb)
    asked = []

    def fake_measure(model, optimizer, cfg, ranks, splits, size):
        asked.append(size)
        return int((fixed_gb + per_sequence_gb * size) * 1024**3)

    resident = int(resident_gb * 1024**3)
    choice = micro.choose(None, None, cfg, Ranks(), None, fake_measure, resident)
    assert asked == runs and choice.size == chosen and choice.grad_accum == 32 // chosen
    line = choice.trials_line()
    assert line.startswith("micro-batch auto: 1 → ") and line.endswith(f"; chose {chosen}")
    if len(runs) > 1 and chosen < 32:  # predicted from a line through two: exactly
        over = f"{fixed_gb + per_sequence_gb * 2 * chosen:.2f} GB (predicted, over {budget_gb:.2f}"
        assert line.endswith(f", {2 * chosen} → {over} GB); chose {chosen}")


def test_micro_batch_auto_says_none_fits_when_one_sequence_is_over(tmp_path):
    cfg = config(tmp_path, "none", batch_size=8, max_memory=1.0)
    with pytest.raises(UserError, match="no micro-batch fits: one sequence's step peaked at 2"):
        micro.choose(None, None, cfg, Ranks(), None, lambda *a: 2 * 1024**3, resident=0)


def test_micro_batch_n_sets_the_accumulation(tmp_path):
    start = prepare(config(tmp_path, "n", batch_size=8, micro_batch="2"))
    assert start.cfg.grad_accum == 4


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--micro-batch", "auto", "--max-memory", "0.0001"], "no micro-batch fits"),
        (["--micro-batch", "3"], "does not divide into 1 rank(s) x micro-batches of 3"),
        (["--micro-batch", "2", "--grad-accum", "2"], "give --grad-accum or --micro-batch"),
        (["--micro-batch", "big"], "--micro-batch must be a positive integer or auto"),
        (["--dtype", "float16"], "--dtype must be one of"),
        (["--activation-checkpointing", "--dropout", "0.1"], "needs --dropout 0"),
    ],
)
def test_micro_batch_and_dtype_errors_are_one_line_exit_2(cli_in_process, tmp_path, flags, message):
    result = cli_in_process(TRAIN, "--preset", "tiny", *flags, "--out-dir", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    line = one_line_error(result)
    assert message in line
    if "no micro-batch fits" in line:
        assert "--activation-checkpointing" in line and "--dtype bfloat16" in line
    assert not (tmp_path / "run").exists()


def test_auto_dtype_is_the_faster_by_a_measured_matmul_once_per_machine(tmp_path, monkeypatch):
    from mlx_gpt.machine.speed import cached_choice, choose_dtype, model_shape

    monkeypatch.setenv("MLX_GPT_CACHE_DIR", str(tmp_path / "cache"))
    measured = []

    def fake(speeds):
        def measure(shape, dtype):
            measured.append((shape, dtype))
            return speeds[dtype]

        return measure

    shape = model_shape(1024, 768)
    assert shape == (1024, 768, 3072)
    assert cached_choice(shape) is None
    # An M1's GPU, say: bf16 no faster than float32, so float32.
    assert choose_dtype(shape, measure=fake({"float32": 900.0, "bfloat16": 850.0})).dtype == (
        "float32"
    )
    assert len(measured) == 2
    # Once measured, the machine's figures are kept: a second run measures nothing.
    again = choose_dtype(shape, measure=fake({"float32": 1.0, "bfloat16": 1000.0}))
    assert again.dtype == "float32" and len(measured) == 2 and cached_choice(shape) == again
    assert "float32 900, bfloat16 850 GFLOP/s on a 1024x768x3072 matmul" in again.text()
    # Another shape is measured afresh; there bf16 is clearly faster.
    other = choose_dtype((256, 384, 1536), measure=fake({"float32": 400.0, "bfloat16": 800.0}))
    assert other.dtype == "bfloat16" and len(measured) == 4


def test_auto_dtype_on_this_machine_follows_its_measured_matmuls(tmp_path, monkeypatch):
    from mlx_gpt.machine.speed import cached_choice, model_shape

    monkeypatch.setenv("MLX_GPT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = resolve("gpt2", None, {"out_dir": str(tmp_path)})
    choice = cached_choice(model_shape(1024, 768))
    assert choice is not None and cfg.dtype == choice.dtype
    faster = max(choice.gflops, key=choice.gflops.get)
    assert cfg.dtype == faster or faster == "bfloat16"  # bf16 only when clearly faster
    if mx.default_device() == mx.cpu:  # MLX's CPU backend emulates bf16 matmuls
        assert cfg.dtype == "float32"
    from mlx_gpt.cli.train import dtype_auto_note

    assert dtype_auto_note(cfg) == f"{choice.text()}: chose {cfg.dtype}"  # the banner's line
    assert dtype_auto_note(resolve("small", None, {"out_dir": str(tmp_path)})) is None
    assert resolve("lecture", None, {"out_dir": str(tmp_path)}).dtype == "float32"
