"""What both benchmark workers share; imports neither MLX nor PyTorch."""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where a benchmark writes its results file unless --json says: out/ is not tracked, so
# a run leaves the checkout clean. bench/results/ holds the files the docs quote.
RESULTS_DIR = ROOT / "out" / "bench"
# Variables that change which BLAS kernels run or how many threads they use.
BLAS_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "MLX_GPT_NO_BLAS",
)

# The end-to-end row: gpt.py's small configuration, trained and evaluated as a user does
# (the lecture's optimizer: AdamW, lr 3e-4, weight decay 0.01, no schedule).
END_TO_END = dict(
    batch_size=12,
    block_size=64,
    n_layer=4,
    n_head=4,
    n_embd=128,
    dropout=0.0,
    max_iters=2000,
    eval_interval=250,
    eval_iters=200,
    learning_rate=3e-4,
)

# Model sizes and batch shapes, named like the training presets.
CONFIGS = {
    "lecture": dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, batch_size=64),
    "small": dict(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, batch_size=12),
    "quick": dict(block_size=64, n_layer=2, n_head=2, n_embd=64, dropout=0.0, batch_size=8),
}
# The lecture's size with GPT-2's options on a 1024-token BPE (preset lecture-bpe).
CONFIGS["lecture-bpe"] = {
    **CONFIGS["lecture"],
    "activation": "gelu_tanh",
    "qkv_bias": True,
    "tie_embeddings": True,
    "vocab_size": 1024,
}
VOCAB = 65  # the tiny Shakespeare characters: every config's vocabulary unless it says
MB = 1024**2


# The CPU features that decide which kernels run: what the bench records and prints.
SIMD_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def _load_by_path(relative: str):
    """A module of mlx_gpt that imports no MLX (machine/facts.py, runs/durable.py),
    loaded by its path: importing the mlx_gpt package would load OpenBLAS for MLX
    (linux_blas.py) into the PyTorch workers too."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location("mlx_gpt_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while they are made
    spec.loader.exec_module(module)
    return module


facts = _load_by_path("mlx_gpt/machine/facts.py")
durable = _load_by_path("mlx_gpt/runs/durable.py")  # fsync, for torch_train.py's checkpoints
cpu_name, cpu_flags = facts.cpu_name, facts.cpu_flags
# The host as the OS reports it (MLX is not asked: a PyTorch worker does not load it).
HOST = facts.Machine.detect(ask_mlx=False)
rss_mb, peak_rss_mb, tree_rss_mb = HOST.rss_mb, HOST.peak_rss_mb, HOST.tree_rss_mb


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("mlx", "torch", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def provenance() -> dict:
    """Where a results file's figures come from: the machine, the command line, the
    commit (and whether the code differed from it), the date and the versions."""
    flags = cpu_flags()
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "commit": _git("rev-parse", "HEAD") or None,
        "uncommitted_changes": bool(changed),
        "cpu": cpu_name(),
        "cpu_flags": {f: f in flags for f in SIMD_FLAGS},
        "cores": os.cpu_count(),
        "ram_gb": round(HOST.ram_bytes / 2**30, 1),
        "platform": platform.platform(),
        "versions": versions(),
        "env": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
    }


def write_results(kind: str, figures: dict, path: str | None, meta: dict | None = None) -> Path:
    """Write a benchmark's results file whole, {"meta": meta, **figures}, to `path` or to
    out/bench/KIND-DATE.json, through a temporary file so that a stopped benchmark
    leaves no half-written one. `meta` is provenance() unless given (with more in it).
    These files are the figures' only source: the docs quote them as written."""
    meta = meta or provenance()
    target = Path(path) if path else RESULTS_DIR / f"{kind}-{meta['date'][:10]}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, **figures}, indent=1))
    tmp.replace(target)
    return target


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (facts.Machine.bf16_native)."""
    return HOST.bf16_native


MODEL_OPTIONS = ("activation", "qkv_bias", "bias", "tie_embeddings")


def model_dims(config: dict) -> dict:
    """The model's settings in a config: sizes, and the GPT-2 options it names."""
    keys = ("block_size", "n_layer", "n_head", "n_embd", "dropout")
    return {k: config[k] for k in keys} | {k: config[k] for k in MODEL_OPTIONS if k in config}


def vocab_size(config: dict) -> int:
    return config.get("vocab_size", VOCAB)


def flops_per_token(config: dict, n_params: int) -> float:
    """Training FLOPs per token, as nanoGPT's estimate_mfu counts them (PaLM appendix B):
    6 per weight (forward + backward) plus attention's 12 * n_layer * n_embd * T; the
    position table is a lookup and does not count."""
    c = config
    non_embedding = n_params - c["block_size"] * c["n_embd"]
    return 6 * non_embedding + 12 * c["n_layer"] * c["n_embd"] * c["block_size"]


def time_calls(fn, n: int) -> list[float]:
    """Seconds of each of n calls; fn must block until its work is done."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def training_figures(
    config: dict,
    n_params: int,
    compile_s: float,
    times: list[float],
    min_warmup: int = 0,
) -> dict:
    """The training row of a result: speed, and the model's FLOP/s.

    `times` are the steps after the compiling one; the first `warmup_steps` of them
    (at least min_warmup) are warm-up, chosen so that the first timed step is not
    slower than the median of the timed ones."""
    warmup = warm_up_steps(times, min_warmup)
    times = times[warmup:]
    tokens = config["batch_size"] * config["block_size"]
    step_s = median(times)
    model_flops = flops_per_token(config, n_params) * tokens / step_s
    return {
        "params": n_params,
        "compile_s": compile_s,
        "ms_per_step": 1000 * step_s,
        "warmup_steps": warmup,
        "step_times_ms": [1000 * t for t in times],
        "tokens_per_sec": tokens / step_s,
        "model_flops": model_flops,
    }


def warm_up_steps(times: list[float], min_warmup: int, min_timed: int = 3) -> int:
    """The fewest leading steps (at least min_warmup) to drop so that the first step
    left is not slower than the median of those left, keeping min_timed of them."""
    last = max(min_warmup, len(times) - min_timed)
    for k in range(min_warmup, last + 1):
        if times[k] <= median(times[k:]):
            return k
    return min(min_warmup, len(times) - 1)


def generation_figures(spec: dict, generate) -> dict:
    """Characters/sec of generate(n, cached) -> characters produced, with the KV cache
    and with gpt.py's crop loop; nothing when the spec asks for no generation."""
    figures = {}
    if spec["gen_tokens"]:
        for name, cached in (("gen_cached", True), ("gen_crop", False)):
            start = time.perf_counter()
            produced = generate(spec["gen_tokens"], cached)
            figures[f"{name}_tokens_per_sec"] = produced / (time.perf_counter() - start)
    return figures


def median(xs):
    return statistics.median(xs)


def read_spec() -> dict:
    return json.loads(sys.argv[1])


def emit(result: dict) -> None:
    """The worker's answer: one JSON line, last on stdout."""
    print(json.dumps(result), flush=True)
