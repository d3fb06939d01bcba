"""Data-parallel training with mx.distributed: 2 ranks on the ring backend over
localhost, started by hand (MLX_RANK, MLX_HOSTFILE) and once through mlx.launch."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_gpt.metrics import read_metrics
from mlx_gpt.runs.folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
# tiny, dropout 0 (equality across ranks needs it), one BLAS thread per rank (2 cores)
TINY = ["--preset", "tiny", "--dropout", "0", "--eval-interval", "10", "--log-interval", "5"]
TINY += ["--threads", "1", "--peer-timeout", "20"]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_ranks(
    tmp_path: Path, args_of_rank, cwd_of_rank=None, program=(TRAIN,)
) -> list[subprocess.Popen]:
    """Start 2 ranks of train.py (or of `program`); args_of_rank(r) gives rank r's
    arguments."""
    hostfile = tmp_path / f"hosts-{time.monotonic_ns()}.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{p}"] for p in free_ports(2)]))
    procs = []
    for r in range(2):
        env = {**os.environ, "MLX_RANK": str(r), "MLX_HOSTFILE": str(hostfile)}
        procs.append(
            subprocess.Popen(
                [sys.executable, *program, *args_of_rank(r)],
                env=env,
                cwd=cwd_of_rank(r) if cwd_of_rank else ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def finish(procs, timeout=240) -> list[tuple[int, str, str]]:
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=timeout)
        out.append((p.returncode, stdout, stderr))
    return out


def run_ranks(tmp_path, args_of_rank, **kw):
    return finish(start_ranks(tmp_path, args_of_rank, **kw))


def run_single(out: Path, *args):
    result = subprocess.run(
        [sys.executable, TRAIN, *TINY, *args, "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    return out


def logged(out: Path) -> dict[int, dict]:
    keys = ("train_loss", "val_loss", "eval_train_loss")
    records = read_metrics(out / "metrics.jsonl")
    return {r["step"]: {k: r[k] for k in keys if k in r} for r in records if "event" not in r}


def assert_same_run(a: Path, b: Path, tol=1e-5):
    la, lb = logged(a), logged(b)
    assert la.keys() == lb.keys() and len(la) > 3
    for step in la:
        for k, v in la[step].items():
            assert abs(v - lb[step][k]) < tol, (step, k, v, lb[step][k])
    wa = mx.load(str(a / "latest" / "model.safetensors"))
    wb = mx.load(str(b / "latest" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert max(np.abs(np.array(wa[k] - wb[k])).max() for k in wa) < tol


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run_single(tmp_path_factory.mktemp("single") / "run", "--max-iters", "20")


def test_two_ranks_equal_one_process(single, tmp_path):
    outs = [tmp_path / "rank0", tmp_path / "rank1"]
    results = run_ranks(tmp_path, lambda r: [*TINY, "--max-iters", "20", "--out-dir", str(outs[r])])
    (code0, stdout0, stderr0), (code1, stdout1, stderr1) = results
    assert code0 == 0 and code1 == 0, (stderr0, stderr1)
    assert "ranks 2 (backend ring)" in stdout0
    assert_same_run(single, outs[0])
    # rank 1 printed nothing and wrote nothing, though told another --out-dir
    assert stdout1 == "" and stderr1 == ""
    assert not outs[1].exists()
    # tokens/sec counts both ranks' tokens: every record's tokens are the global batch's
    assert read_metrics(outs[0] / "metrics.jsonl")[-1]["tokens"] == 20 * 8 * 32


def test_two_ranks_equal_one_process_with_muon(tmp_path):
    # Muon's and the AdamW groups' updates a part at a time on averaged gradients (two
    # ranks) against the single compiled step (one process).
    speedrun = ["--architecture", "modern", "--optimizer", "muon", "--schedule", "wsd"]
    speedrun += ["--embedding-lr", "0.01", "--max-iters", "20"]
    single = run_single(tmp_path / "single", *speedrun)
    outs = [tmp_path / "rank0", tmp_path / "rank1"]
    results = run_ranks(tmp_path, lambda r: [*TINY, *speedrun, "--out-dir", str(outs[r])])
    assert all(code == 0 for code, _, _ in results), [err for _, _, err in results]
    assert_same_run(single, outs[0])
    moments = mx.load(str(outs[0] / "latest" / "optimizer.safetensors"))
    assert any(k.endswith(".v") for k in moments)  # Muon's momentum was saved


def test_grad_accum_equals_one_batch(single, tmp_path):
    accumulated = run_single(tmp_path / "acc", "--max-iters", "20", "--grad-accum", "2")
    assert_same_run(single, accumulated)


def test_ctrl_c_on_rank_0_then_resume_equals_an_unbroken_run(tmp_path):
    args = [*TINY, "--max-iters", "150", "--eval-interval", "50"]
    unbroken = tmp_path / "unbroken"
    results = run_ranks(tmp_path, lambda r: [*args, "--out-dir", str(unbroken)])
    assert [c for c, _, _ in results] == [0, 0], results[0][2]

    broken = tmp_path / "broken"
    procs = start_ranks(tmp_path, lambda r: [*args, "--out-dir", str(broken)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # Ctrl-C once rank 0 has logged step 20
        if (broken / "metrics.jsonl").is_file() and any(
            r["step"] >= 20 for r in read_metrics(broken / "metrics.jsonl")
        ):
            break
        time.sleep(0.05)
    procs[0].send_signal(signal.SIGINT)
    (code0, _, stderr0), (code1, _, stderr1) = finish(procs)
    assert code0 == 130 and code1 == 130, (stderr0, stderr1)
    stopped_at = json.loads((broken / "latest" / "state.json").read_text())["step"]
    assert 20 <= stopped_at < 150
    results = run_ranks(tmp_path, lambda r: [*args, "--out-dir", str(broken), "--resume"])
    assert [c for c, _, _ in results] == [0, 0], results[0][2]
    assert_same_run(unbroken, broken)


def test_ctrl_c_on_rank_0_in_an_evaluation_stops_both_ranks_at_a_batch(tmp_path):
    # Evaluation batches that take a measurable time; 200 of them between two ranks.
    slow = [*TINY, "--n-embd", "128", "--n-head", "4", "--block-size", "128"]
    slow += ["--batch-size", "32", "--eval-iters", "100", "--max-iters", "5"]
    out = tmp_path / "eval"
    procs = start_ranks(tmp_path, lambda r: [*slow, "--out-dir", str(out)])
    deadline = time.monotonic() + 180
    for line in procs[0].stdout:  # rank 0's plain progress
        if eta := re.search(r"evaluating train: batch 1/100, ETA (\d+):(\d+):(\d+)", line):
            break
        assert time.monotonic() < deadline, "no evaluation progress"
    # rank 0 computed batch 1 of 200 alone, so this ETA is about twice the evaluation's
    whole_evaluation = (int(eta[1]) * 3600 + int(eta[2]) * 60 + int(eta[3])) / 2
    started = time.monotonic()
    procs[0].send_signal(signal.SIGINT)
    (code0, _, stderr0), (code1, _, stderr1) = finish(procs)
    seconds = time.monotonic() - started
    assert code0 == 130 and code1 == 130, (stderr0, stderr1)
    assert seconds < whole_evaluation / 3, (seconds, whole_evaluation)
    assert json.loads((out / "latest" / "state.json").read_text())["step"] == 0
    assert read_metrics(out / "metrics.jsonl") == []
    assert stderr1 == ""


def test_an_all_reduce_that_loses_its_peer_is_one_line_naming_it():
    # What MLX's ring raises in the invoker's thread when a socket to a peer fails:
    # turned into PeerLost, not a traceback, and not left to the watchdog.
    from mlx_gpt.distributed.ranks import Ranks
    from mlx_gpt.errors import PeerLost

    def fails(message: str):
        def collective():
            raise RuntimeError(message)

        return collective

    ranks = Ranks(rank=0, size=2, timeout=600)
    lost = r"^lost rank 1 \(\[ring\] connection to a peer was lost\)$"
    with pytest.raises(PeerLost, match=lost):
        ranks.run(fails("[ring] connection to a peer was lost"))
    with pytest.raises(RuntimeError, match="out of memory"):  # other errors stay theirs
        ranks.run(fails("out of memory"))


def test_kill_9_of_rank_1_stops_rank_0_with_latest_intact(tmp_path):
    # A killed peer closes its sockets and the next all-reduce usually fails at once.
    # Not always: MLX's ring (0.32) stops a socket's worker thread when it fails the
    # tasks it holds, and a collective queued on that socket afterwards waits for
    # ever, so there the watchdog ends it after --peer-timeout. Either way: exit 5,
    # one line naming rank 1, latest/ whole.
    out = tmp_path / "run"
    args = [*TINY, "--max-iters", "100000", "--out-dir", str(out), "--peer-timeout", "30"]
    procs = start_ranks(tmp_path, lambda r: args)
    deadline = time.monotonic() + 120
    while not (out / "latest" / "state.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    procs[1].kill()  # SIGKILL
    killed = time.monotonic()
    (code0, _, stderr0), _ = finish(procs, timeout=120)
    assert time.monotonic() - killed < 30 + 30  # the watchdog's 30 s at the latest
    assert code0 == 5, stderr0
    lines = stderr0.strip().splitlines()
    assert len(lines) == 1 and "lost rank 1" in lines[0], stderr0
    # The step the line names is the one latest/ holds, and it loads.
    named = int(re.search(r"latest/ holds step (\d+)\. Resume with: .*--resume", lines[0])[1])
    model, _ = RunFolder(out).load_model("latest")
    assert json.loads((out / "latest" / "state.json").read_text())["step"] == named
    assert all(np.isfinite(np.array(p)).all() for _, p in tree_flatten(model.parameters()))


LATE_RING_LINES = """
import atexit, os, sys
# atexit runs its handlers last in, first out: this one runs after the filter's own,
# as the ring's C++ threads write while the process ends
atexit.register(os.write, 2, b"[ring] Sending to socket 5 failed with errno 32\\n")
from mlx_gpt.distributed.peers import quiet_ring_messages
quiet_ring_messages()
os.write(2, b"[ring] Socket 4 was closed by the peer\\n")
print("error: rank 0: lost rank 1", file=sys.stderr)
sys.exit(5)
"""


def test_the_ring_lines_written_as_the_process_ends_stay_off_stderr():
    done = subprocess.run([sys.executable, "-c", LATE_RING_LINES], capture_output=True, cwd=ROOT)
    assert done.returncode == 5
    assert done.stderr == b"error: rank 0: lost rank 1\n"


def test_a_batch_that_does_not_divide_stops_every_rank(tmp_path):
    outs = [tmp_path / "rank0", tmp_path / "rank1"]
    results = run_ranks(tmp_path, lambda r: [*TINY, "--batch-size", "7", "--out-dir", str(outs[r])])
    for code, _, stderr in results:
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert "--batch-size 7 does not divide into 2 rank(s)" in stderr
    assert not outs[0].exists()


def test_different_data_on_one_host_stops_every_rank(tmp_path):
    homes = [tmp_path / "host0", tmp_path / "host1"]
    for i, home in enumerate(homes):
        home.mkdir()
        (home / "text.txt").write_text("To be, or not to be, that is the question.\n" * (50 + i))
    out = tmp_path / "run"
    args = [*TINY, "--data", "text.txt", "--block-size", "8", "--out-dir", str(out)]
    results = run_ranks(tmp_path, lambda r: args, cwd_of_rank=lambda r: homes[r])
    for code, _, stderr in results:
        assert code == 2 and stderr.count("\n") == 1, stderr
        assert "on rank 1 (host " in stderr and "differs from rank 0's" in stderr
    assert not out.exists()
    (homes[1] / "text.txt").unlink()
    results = run_ranks(tmp_path, lambda r: args, cwd_of_rank=lambda r: homes[r])
    for code, _, stderr in results:
        assert code == 2 and "rank 1 on host" in stderr and "does not exist" in stderr


def test_mlx_launch_runs_two_ranks(tmp_path):
    launcher = Path(sys.executable).parent / "mlx.launch"
    if not launcher.exists():
        pytest.skip("mlx.launch is not installed beside this Python")
    out = tmp_path / "run"
    result = subprocess.run(
        [str(launcher), "-n", "2", "--", sys.executable, TRAIN, *TINY,
         "--max-iters", "10", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr  # (it exits 0 even when a rank fails)
    assert "ranks 2 (backend ring)" in result.stdout
    assert max(r["step"] for r in read_metrics(out / "metrics.jsonl")) == 10
