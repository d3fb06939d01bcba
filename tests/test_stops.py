"""Stops a person can trust: a signal ends an evaluation within a batch, every message
names only what is on disk, and the loop says how far it has come and how long the rest
will take. Each run is the real CLI in a subprocess, as in test_faults.py."""

import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from test_faults import one_line_error, start

from mlx_gpt.distributed.ranks import Ranks
from mlx_gpt.metrics import read_metrics
from mlx_gpt.model.gpt import GPT
from mlx_gpt.presets import preset_config
from mlx_gpt.runs.folder import RunFolder
from mlx_gpt.training.estimate import estimate_line, quick_run_seconds, step_flops
from mlx_gpt.training.optimizer import make_optimizer
from mlx_gpt.training.step import build_step, trial_step

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
GENERATE = str(ROOT / "generate.py")
# A model whose evaluation batch takes a measurable time (about 0.2 s on a 2-core AVX2
# CPU), so that an evaluation of many batches is long and a stop within one is short.
SLOW_EVAL = ["--preset", "tiny", "--n-embd", "128", "--n-head", "4", "--block-size", "128"]
SLOW_EVAL += ["--batch-size", "32", "--log-interval", "1"]


def read_until(proc: subprocess.Popen, pattern: str, timeout: float = 180) -> re.Match:
    """Read the run's stdout (plain mode) until a line matches `pattern`."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if found := re.search(pattern, line):
            return found
        assert time.monotonic() < deadline, f"no {pattern!r} in {timeout} s"
    raise AssertionError(f"the run ended without {pattern!r}: {proc.communicate()}")


def stop_at(proc: subprocess.Popen, signum: int) -> tuple[float, str]:
    """Send the signal; return the seconds until the process had ended, and its stderr."""
    sent = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=180)
    return time.monotonic() - sent, stderr


def one_line(stderr: str) -> str:
    return one_line_error(subprocess.CompletedProcess([], 0, "", stderr))


def losses(run: Path) -> dict[int, dict[str, float]]:
    keys = ("train_loss", "val_loss", "eval_train_loss", "lr")
    return {r["step"]: {k: r[k] for k in keys if k in r} for r in read_metrics(run)}


def test_ctrl_c_in_the_first_evaluation_stops_within_batches_and_resumes(cli, tmp_path):
    out = tmp_path / "first"
    proc = start(*SLOW_EVAL, "--eval-iters", "200", "--max-iters", "8", "--out-dir", str(out))
    eta = read_until(proc, r"evaluating train: batch 1/200, ETA (\d+):(\d+):(\d+)")
    batch = (int(eta[1]) * 3600 + int(eta[2]) * 60 + int(eta[3])) / 399  # the rest's share
    seconds, stderr = stop_at(proc, signal.SIGINT)
    assert proc.returncode == 130, stderr
    # The batch under way, a few more while the signal and the pipe travel, and the
    # process's own exit; 200 batches of this split would take 40 s or more.
    assert seconds < 3 + 4 * batch, (seconds, batch)
    message = one_line(stderr)
    assert message.startswith("stopped by SIGINT: latest/ holds step 0. Resume with: ")
    assert read_metrics(out / "metrics.jsonl") == []  # nothing of the evaluation recorded
    # latest/ was saved before the evaluation: the step-0 weights, which load.
    model, _ = RunFolder(out).load_model("latest")
    assert all(np.isfinite(np.array(p)).all() for _, p in tree_flatten(model.parameters()))
    # Sampling from them says that they are untrained.
    sampled = cli(GENERATE, "--out-dir", str(out), "--checkpoint", "latest", "--tokens", "5")
    assert sampled.returncode == 0, sampled.stderr
    assert "warning:" in sampled.stderr and "untrained model of step 0" in sampled.stderr
    assert "latest, step 0, KV cache" in sampled.stderr

    # Resumed (with a short evaluation), it logs what an unbroken run logs.
    short = ["--eval-iters", "4", "--max-iters", "8"]
    resumed = cli(TRAIN, "--out-dir", str(out), "--resume", *short)
    assert resumed.returncode == 0, resumed.stderr
    unbroken = tmp_path / "unbroken"
    assert cli(TRAIN, *SLOW_EVAL, *short, "--out-dir", str(unbroken)).returncode == 0
    a, b = losses(unbroken / "metrics.jsonl"), losses(out / "metrics.jsonl")
    assert a.keys() == b.keys() and len(a) == 9
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-6), step


def test_an_evaluation_asked_to_stop_ends_after_the_batch_under_way():
    # The subprocess test above bounds the stop by time; this counts the batches.
    from mlx_gpt.data.tokens import Splits, Tokens
    from mlx_gpt.training.evaluation import EvaluationStopped, estimate_loss

    cfg = preset_config("tiny")
    ids = np.random.default_rng(0).integers(0, 65, 4096).astype(np.uint16)
    splits = Splits(Tokens([ids]), Tokens([ids]), None, None)
    model = GPT(cfg.model_config(65))
    done: list[tuple[str, int]] = []
    with pytest.raises(EvaluationStopped):
        estimate_loss(
            model, splits, cfg, on_batch=lambda split, i, n: done.append((split, i)),
            stop=lambda: len(done) >= 3,  # asked for during the third batch
        )  # fmt: skip
    assert done == [("train", 1), ("train", 2), ("train", 3)]
    assert model.training  # given back in the mode the loop left it


def test_sigterm_in_a_later_evaluation_keeps_the_last_step_and_the_printed_resume_works(
    cli, tmp_path
):
    out = tmp_path / "later"
    first = cli(TRAIN, *SLOW_EVAL, "--eval-iters", "2", "--max-iters", "3", "--out-dir", str(out))
    assert first.returncode == 0, first.stderr
    long_evaluations = ["--eval-iters", "200", "--eval-interval", "5", "--max-iters", "100"]
    proc = start("--resume", "--out-dir", str(out), *long_evaluations)
    read_until(proc, r"evaluating train: batch 1/200")  # the evaluation at step 5
    _, stderr = stop_at(proc, signal.SIGTERM)
    assert proc.returncode == 143, stderr
    message = one_line(stderr)
    assert "SIGTERM" in message and "latest/ holds step 5" in message
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert "train_loss" in records[-1]  # the steps' record is kept ...
    assert not {"val_loss", "eval_train_loss", "val_bpc"} & set(records[-1])  # ... not a part

    # The command in the message resumes the run, as printed.
    command = shlex.split(message.split("Resume with: ", 1)[1])
    assert command[:2] == ["python", "train.py"]
    again = subprocess.Popen(
        [sys.executable, TRAIN, *command[2:]], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, bufsize=1,
    )  # fmt: skip
    read_until(again, r"resuming at step 5 to step 100")
    read_until(again, r"evaluating train: batch 1/200")
    _, stderr = stop_at(again, signal.SIGTERM)
    assert again.returncode == 143 and "latest/ holds step 10" in one_line(stderr)


def test_stop_messages_name_only_what_is_on_disk(tiny_run, tmp_path):
    from mlx_gpt.cli.train import start_command, what_is_saved

    cfg = preset_config("tiny")
    cfg.out_dir = str(tiny_run[0])
    said = what_is_saved(cfg)
    resume = f"python train.py --out-dir {cfg.out_dir} --resume"
    assert said == f"latest/ holds step 100. Resume with: {resume}"
    cfg.out_dir = str(tmp_path / "never-saved")
    said = what_is_saved(cfg)
    assert said.startswith(f"nothing is saved in {cfg.out_dir}/. Start again with: python")
    assert "--resume" not in said
    argv = ["/x/mlx_gpt/__main__.py", "train", "--preset", "tiny", "--resume", "--out-dir", "a b"]
    assert start_command(argv) == "python train.py --preset tiny --out-dir 'a b'"


def test_plain_output_shows_the_evaluations_progress(tiny_run):
    stdout = tiny_run[1].stdout
    for split in ("train", "val"):
        assert f"evaluating {split}: batch 1/5, ETA" in stdout
        assert f"evaluating {split}: batch 5/5, ETA 0:00:00" in stdout


def test_generate_names_the_checkpoints_step_and_loss(cli, tiny_run):
    trained = cli(GENERATE, "--out-dir", str(tiny_run[0]), "--tokens", "5")
    assert trained.returncode == 0 and "warning" not in trained.stderr
    assert re.search(r"best, step 100, best val loss \d\.\d{4}, KV cache", trained.stderr)


def test_an_unknown_prompt_character_says_what_to_do(cli, tiny_run):
    result = cli(GENERATE, "--out-dir", str(tiny_run[0]), "--prompt", "Ünïcødé ☃")
    assert result.returncode == 2
    message = one_line(result.stderr)
    assert "not in the vocabulary" in message and "characters it was trained on" in message
    assert "--tokenizer bpe" in message
    one = one_line(cli(GENERATE, "--out-dir", str(tiny_run[0]), "--prompt", "a§").stderr)
    assert "character '§' is not in the vocabulary" in one  # one character: said as one


def test_a_trial_step_leaves_the_run_as_it_was():
    # Two setups from the same seed: one makes a trial step first, then both train.
    runs = []
    for trial in (False, True):
        cfg = preset_config("tiny")
        mx.random.seed(cfg.seed)
        model = GPT(cfg.model_config(65))
        optimizer = make_optimizer(cfg)
        optimizer.init(model.trainable_parameters())
        model.train()
        step = build_step(model, optimizer, cfg, Ranks())
        rng = np.random.default_rng(0)
        batches = [
            tuple(mx.array(rng.integers(0, 65, (8, 32))) for _ in range(2)) for _ in range(4)
        ]
        if trial:
            seconds, loss = trial_step(step, model, optimizer, *batches[-1])
            assert seconds > 0 and loss > 0
        # dropout is on in tiny: the random state must be put back too
        runs.append(([step(x, y) for x, y in batches], tree_flatten(model.parameters())))
    (plain, plain_weights), (after_trial, trial_weights) = runs
    assert plain == after_trial
    for (name, a), (_, b) in zip(plain_weights, trial_weights, strict=True):
        assert np.array_equal(np.array(a), np.array(b)), name


def test_the_time_estimate_projects_the_run_and_scales_small_by_flops():
    cfg = preset_config("lecture")
    model = cfg.model_config(65)
    line = estimate_line(0, cfg, model, step_s=25.0, eval_batch_s=6.0)
    # 5000 steps of 25 s, and the 10 evaluations to come of 400 batches of 6 s: 41.4 hours
    start = "on this machine: ~25 s a step, ~40 min an evaluation; 5000 steps ≈ 41 h."
    assert line.startswith(start), line
    assert "--preset small (≈" in line
    assert estimate_line(0, cfg, model, step_s=0.5, eval_batch_s=0.01) is None  # under an hour
    # The small figure is this machine's seconds per FLOP times small's FLOPs.
    small = preset_config("small")
    ratio = step_flops(small.model_config(65), 12, 64) / step_flops(model, 64, 256)
    evaluations = 2000 // 250
    expected = 25.0 * ratio * (2000 + evaluations * 2 * 20 / 3)
    assert quick_run_seconds(cfg, model, 25.0) == pytest.approx(expected)
    assert quick_run_seconds(cfg, model, 50.0) == pytest.approx(2 * expected)
