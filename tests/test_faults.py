"""The fault table: each row runs the real CLI in a subprocess and checks three things:
the exit code, one line on stderr with no traceback, and that what was on disk before
is still loadable and unchanged."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_gpt.metrics import read_metrics
from mlx_gpt.runs import checkpoint
from mlx_gpt.runs.folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
GENERATE = str(ROOT / "generate.py")
TEXT = (ROOT / "mlx_gpt" / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")
LONG = ["--preset", "tiny", "--max-iters", "100000", "--log-interval", "1"]


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def one_line_error(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def loads(run: Path, which: str = "latest") -> int:
    """Load a checkpoint as generate and --resume do; return its step."""
    model, _ = RunFolder(run).load_model(which)
    for _, p in tree_flatten(model.parameters()):
        assert np.isfinite(np.array(p)).all()
    found = RunFolder(run).checkpoint(which)
    mx.load(str(found / checkpoint.OPTIMIZER_FILE))
    return checkpoint.load_state(found)["step"]


def start(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, TRAIN, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        metrics = run / "metrics.jsonl"
        if metrics.exists():
            records = [r for r in read_metrics(metrics) if "event" not in r]
            if records and records[-1]["step"] >= step:
                return
        time.sleep(0.05)
    raise AssertionError(f"no step {step} in {timeout} s")


@pytest.fixture
def run(tmp_path, tiny_run):
    """A copy of a finished tiny run (100 steps) to damage."""
    copy = tmp_path / "run"
    shutil.copytree(tiny_run[0], copy)
    return copy


def test_loss_becomes_nan(cli, tmp_path):
    out = tmp_path / "nan"
    result = cli(TRAIN, "--preset", "tiny", "--learning-rate", "1e6", "--out-dir", str(out))
    assert result.returncode == 3, result.stderr
    message = one_line_error(result)
    assert "inf or nan" in message or "nan" in message, message
    assert "--learning-rate" in message and "latest/ keeps step 0" in message
    assert loads(out) == 0  # the last good state: the initial weights


def test_sigterm_mid_step_saves_and_resumes_like_an_unbroken_run(cli, tmp_path):
    out = tmp_path / "term"
    proc = start(*LONG, "--out-dir", str(out))
    wait_for_step(out, 30, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    message = one_line_error(subprocess.CompletedProcess([], 143, "", stderr))
    assert "SIGTERM" in message and "--resume" in message
    stopped = loads(out)
    assert stopped >= 30 and stopped % 25  # saved at the interrupted step, not an eval
    end = stopped + 20
    resumed = cli(TRAIN, "--resume", "--out-dir", str(out), "--max-iters", str(end))
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight"
    args = ["--preset", "tiny", "--log-interval", "1", "--max-iters", str(end)]
    assert cli(TRAIN, *args, "--out-dir", str(straight)).returncode == 0
    a, b = read_metrics(out / "metrics.jsonl"), read_metrics(straight / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in ("train_loss", "val_loss"):
            if key in y:
                assert x[key] == pytest.approx(y[key], abs=1e-5), (x, y)


def test_kill_9_loses_at_most_one_save_interval(cli, tmp_path):
    out = tmp_path / "kill"
    interval_s = 0.5
    args = [*LONG, "--eval-interval", "100000", "--save-every", str(interval_s / 60)]
    proc = start(*args, "--out-dir", str(out))
    wait_for_step(out, 200, proc)
    time.sleep(2 * interval_s)
    proc.kill()
    killed_at = time.time()
    proc.communicate(timeout=30)
    saved = loads(out)
    assert saved > 0  # saved between evaluations (the only evaluation was at step 0)
    age = killed_at - (out / "latest" / "state.json").stat().st_mtime
    assert age < interval_s + 1.0, age  # one interval, plus a step and a save
    resumed = cli(TRAIN, "--resume", "--out-dir", str(out), "--max-iters", str(saved + 5))
    assert resumed.returncode == 0, resumed.stderr


def test_second_trainer_on_the_same_folder(cli, tmp_path):
    out = tmp_path / "busy"
    first = start(*LONG, "--out-dir", str(out))
    try:
        wait_for_step(out, 5, first)
        began = time.monotonic()
        second = cli(TRAIN, "--resume", "--out-dir", str(out), "--max-iters", "200000")
        assert second.returncode == 2 and time.monotonic() - began < 30
        message = one_line_error(second)
        assert f"PID {first.pid}" in message
        assert first.poll() is None  # the first run goes on
        wait_for_step(out, 40, first)
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    assert loads(out) >= 40


def test_file_size_limit_during_save(run):
    before = digest(run)
    command = f"ulimit -f 40; exec {sys.executable} {TRAIN} --resume --out-dir {run} "
    result = subprocess.run(
        ["bash", "-c", command + "--max-iters 200"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 4, result.stderr
    message = one_line_error(result)
    assert "could not write checkpoint" in message and "keeps its previous state" in message
    for which in ("latest", "best"):
        assert {k: v for k, v in digest(run).items() if k.startswith(which + "/")} == {
            k: v for k, v in before.items() if k.startswith(which + "/")
        }
    assert loads(run) == 100 and not list(run.glob("*.tmp"))


@pytest.mark.parametrize("kind", ["a file", "inside a file"])
def test_out_dir_is_not_a_writable_folder(cli_in_process, tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    out = blocker if kind == "a file" else blocker / "run"
    result = cli_in_process(TRAIN, "--preset", "tiny", "--out-dir", str(out))
    assert result.returncode == 2
    assert str(blocker) in one_line_error(result)
    assert blocker.read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]  # nothing written


def test_data_not_utf8_names_the_byte(cli, tmp_path):
    data = tmp_path / "binary.txt"
    data.write_bytes(b"plain text, then \x89PNG\r\n\x1a\n")
    result = cli(TRAIN, "--preset", "tiny", "--data", str(data), "--out-dir", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "not UTF-8" in one_line_error(result) and "at byte 17" in result.stderr
    assert not (tmp_path / "o").exists()


def test_data_shorter_than_a_block_per_split(cli_in_process, tmp_path):
    data = tmp_path / "short.txt"
    data.write_text("x" * 200)  # val: 20 characters, block 32
    result = cli_in_process(
        TRAIN, "--preset", "tiny", "--data", str(data), "--out-dir", str(tmp_path / "o")
    )
    assert result.returncode == 2 and "too few" in one_line_error(result)
    assert not (tmp_path / "o").exists()


def test_resume_on_other_data(cli, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT[:50_000])
    b.write_text(TEXT[10_000:50_000] + TEXT[:10_000])  # same characters, other text
    out = tmp_path / "run"
    args = ["--preset", "tiny", "--max-iters", "20", "--out-dir", str(out)]
    assert cli(TRAIN, *args, "--data", str(a)).returncode == 0
    before = digest(out)
    resume = ["--resume", "--out-dir", str(out), "--max-iters", "40", "--data", str(b)]
    refused = cli(TRAIN, *resume)
    assert refused.returncode == 2 and "--data-changed" in one_line_error(refused)
    assert digest(out) == before and loads(out) == 20
    assert cli(TRAIN, *resume, "--data-changed").returncode == 0
    assert loads(out) == 40


@pytest.mark.parametrize("command", ["generate", "resume"])
def test_truncated_weights(cli_in_process, run, command):
    weights = run / "latest" / checkpoint.MODEL_FILE
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = digest(run)
    if command == "generate":
        args = [GENERATE, "--out-dir", str(run), "--checkpoint", "latest", "--tokens", "5"]
    else:
        args = [TRAIN, "--resume", "--out-dir", str(run), "--max-iters", "150"]
    result = cli_in_process(*args)
    assert result.returncode == 2
    assert str(weights) in one_line_error(result)
    assert digest(run) == before
    assert loads(run, "best") == 100  # the other checkpoint is untouched


@pytest.mark.parametrize(
    "content, key",
    [({"batch_size": "big"}, "batch_size"), ({"n_layers": 4}, "n_layers")],
    ids=["wrong type", "unknown key"],
)
def test_config_file_with_a_bad_key(cli_in_process, tmp_path, content, key):
    config = tmp_path / "my.json"
    config.write_text(json.dumps(content))
    out = tmp_path / "o"
    result = cli_in_process(
        TRAIN, "--preset", "tiny", "--config", str(config), "--out-dir", str(out)
    )
    assert result.returncode == 2 and key in one_line_error(result)
    assert not out.exists()


def test_memory_budget_too_small(cli_in_process, tmp_path):
    out = tmp_path / "mem"
    result = cli_in_process(
        TRAIN, "--preset", "tiny", "--max-memory", "0.001", "--out-dir", str(out)
    )
    assert result.returncode == 2
    message = one_line_error(result)
    assert "first step used" in message and "MB" in message
    suggested = int(re.search(r"--batch-size (\d+)", message).group(1))
    assert 1 <= suggested < 8  # tiny's batch is 8
    # The trial step found it before the first evaluation: nothing was trained or saved.
    assert not RunFolder(out).has_checkpoint()
    assert read_metrics(out / "metrics.jsonl") == []


def test_damaged_last_metrics_line_then_resume(cli, run):
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 105, "train_lo')  # a run killed mid-write
    result = cli(TRAIN, "--resume", "--out-dir", str(run), "--max-iters", "120")
    assert result.returncode == 0, result.stderr
    assert "damaged" in one_line_error(result)  # the one warning
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["step"] <= 120 for line in lines)  # every line parses
    assert loads(run) == 120


def test_ctrl_c_twice_exits_at_once(tmp_path):
    out = tmp_path / "twice"
    proc = start(*LONG, "--out-dir", str(out))
    wait_for_step(out, 10, proc)
    saved_before = loads(out)  # latest/ as it stood when the signals came
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    began = time.monotonic()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and time.monotonic() - began < 10
    message = one_line_error(subprocess.CompletedProcess([], 130, "", stderr))
    # Whatever the second signal cut short, latest/ loads, is no older than it was, and
    # is the step the message names.
    named = int(re.search(r"latest/ holds step (\d+)\.", message)[1])
    assert loads(out) == named >= saved_before


def test_generate_with_a_checkpoint_that_does_not_exist(cli, run):
    before = digest(run)
    result = cli(GENERATE, "--out-dir", str(run), "--checkpoint", "step50", "--tokens", "5")
    assert result.returncode == 2
    message = one_line_error(result)
    assert "step50" in message and "best, latest" in message
    assert digest(run) == before


def test_the_run_takes_the_machines_budget_unless_max_memory_overrides_it():
    # What each machine's budget is made of is tested in test_machine.py; here, that
    # the run asks the machine (so a CUDA GPU's budget is of its own memory, not the
    # host's RAM), and that --max-memory wins on each.
    from test_machine import linux_cpu, linux_cuda_80gb_gpu_on_24gb_host, mac_m1_16gb

    from mlx_gpt.training.guards import memory_budget

    for machine in (linux_cpu(), linux_cuda_80gb_gpu_on_24gb_host(), mac_m1_16gb()):
        assert memory_budget(None, machine) == machine.memory_budget_bytes(), machine.backend
        assert memory_budget(2.5, machine) == int(2.5 * 2**30)


@pytest.mark.parametrize(
    "signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)]
)
def test_each_stop_signal_asks_for_a_clean_stop_then_gives_back_the_callers_handler(signum, code):
    # The SIGTERM row above runs the whole path; this checks that SIGHUP and SIGINT take
    # it too, and that a second signal stops at once.
    from mlx_gpt.training.signals import deferred_stop, exit_code

    def before(signum, frame):  # a handler of the caller's, to be given back
        raise AssertionError("the caller's handler ran inside the block")

    original = signal.signal(signum, before)
    try:
        with deferred_stop() as stop:
            assert not stop
            os.kill(os.getpid(), signum)
            time.sleep(0.01)  # the handler runs between bytecodes
            assert stop and exit_code(stop.name) == code
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signum)
                time.sleep(0.01)
        assert signal.getsignal(signum) is before  # the caller's handler is back
    finally:
        signal.signal(signum, original)
