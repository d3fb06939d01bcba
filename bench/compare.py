"""MLX against PyTorch on the same model: training and generation speed, memory.

    python bench/compare.py                  # small and lecture, about 12 minutes here
    python bench/compare.py --quick          # a tiny model, under 2 minutes
    python bench/compare.py --configs lecture --torch-device cpu

Each measurement runs in a fresh subprocess (bench/mlx_worker.py, bench/torch_worker.py),
one after another, with the same thread count, so memory and timings do not mix.
Timings are medians over timed steps after warm-up; the first step (tracing and
compiling) is reported apart, and no evaluation runs in between. Writes a JSON file
and a PNG bar chart; see --help.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from common import CONFIGS, END_TO_END, native_bf16, provenance, write_results
from rich.console import Console
from tables import bar_chart, end_to_end_table, generation_table, training_table

HERE = Path(__file__).resolve().parent
TORCH_VARIANTS = ["eager-gptpy", "eager-sdpa", "compile", "autocast"]
GEN_VARIANT = "eager-sdpa"  # PyTorch's generation runs on its best plain eager model
# (warm-up steps, timed steps) after the first (compiling) step, per configuration: a
# stable median within the 15-minute budget (a lecture step takes ~12 s on a 2-core CPU).
STEPS = {"quick": (2, 10), "small": (3, 15), "lecture": (1, 3), "lecture-bpe": (1, 3)}
# Seconds a worker may take before it is stopped and its row marked `timeout`: about 5x
# what it takes on a 2-core AVX-512 CPU, to leave room for a CPU 6x slower than that
# (the lecture's crop loop alone samples 3000 characters at ~13 tok/s there).
TIMEOUTS = {"quick": 60, "small": 300, "lecture": 1800, "lecture-bpe": 1800}

err = Console(stderr=True)


def run(command: list[str], threads: int, timeout: float) -> dict:
    """Run one bench process with `threads` for every BLAS: its last JSON line, and
    `wall_s`. Past `timeout` seconds it is stopped; what it had printed by then (a
    worker's training figures) is kept and marked `timeout`. A failure is `error`: the
    last line of its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=HERE, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        return {**_last_json(out), "timeout": timeout}
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": reason[:200]}
    return {**_last_json(proc.stdout), "wall_s": time.perf_counter() - start}


def _last_json(out: str) -> dict:
    lines = out.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


def run_worker(worker: str, spec: dict, threads: int, timeout: float) -> dict:
    """One measurement: bench/WORKER with SPEC, in a process of its own."""
    result = run([sys.executable, str(HERE / worker), json.dumps(spec)], threads, timeout)
    result.pop("wall_s", None)  # a worker times its own steps
    return result or {"error": "no output"}


# Figures whose range over the repeats a row shows beside its own.
RANGED = (
    "ms_per_step",
    "tokens_per_sec",
    "model_flops",
    "gen_cached_tokens_per_sec",
    "gen_crop_tokens_per_sec",
    "wall_s",
)


def merge_runs(runs: list[dict], by: str = "ms_per_step") -> dict:
    """One row from a worker's repeats: the median run by `by` (of an even number, the
    faster of the middle two), whole, so that every figure in a row comes from the same
    run; beside each figure its (min, max) over the runs, and every run's own figures
    under `runs`. A row with no complete run keeps the last run's error, skip or
    timeout."""
    done = [r for r in runs if not ({"error", "skipped"} & set(r)) and "timeout" not in r]
    if not done:
        return {**runs[-1], "runs": runs}
    ordered = sorted(done, key=lambda r: r[by])
    row = dict(ordered[(len(ordered) - 1) // 2])
    for key in RANGED:
        values = [r[key] for r in done if key in r]
        if values:
            row[f"{key}_range"] = (min(values), max(values))
    row["runs"] = [{k: r.get(k) for k in (*RANGED, "timeout", "error") if k in r} for r in runs]
    return row


# What both end-to-end runs do besides the steps, the same on each side.
END_TO_END_WORK = (
    "the evaluations; at each a metrics line, latest/ and (on a new best) best/, "
    "fsynced; the loss plot at the end; no samples"
)


def run_end_to_end(config: dict, threads: int, device: str, timeout: float) -> list[dict]:
    """One whole run of each framework's training loop, timed as a user waits for it:
    MLX through train.py (samples off), PyTorch through gpt.py's loop with train.py's
    checkpoints, metrics and plot added (bench/torch_train.py). MLX's time includes
    its compiling, in train.py's two trial steps; PyTorch's eager loop has none."""
    import tempfile

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in config.items()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, str(HERE.parent / "train.py"), *flags, "--out-dir", tmp]
        command += ["--threads", str(threads), "--sample-tokens", "0"]
        rows.append(
            {"framework": "mlx", "label": "MLX (train.py)", **run(command, threads, timeout)}
        )
        rows[-1]["files"] = sorted(p.name for p in Path(tmp).iterdir())
        if "wall_s" in rows[-1]:
            metrics = Path(tmp, "metrics.jsonl").read_text().splitlines()
            evals = [json.loads(m) for m in metrics if "val_loss" in m]
            rows[-1].update(val_loss=evals[-1]["val_loss"], evaluations=len(evals))
    with tempfile.TemporaryDirectory() as tmp:
        data = str(HERE.parent / "mlx_gpt" / "assets" / "tinyshakespeare.txt")
        spec = {"config": config, "threads": threads, "device": device, "data": data}
        command = [
            sys.executable,
            str(HERE / "torch_train.py"),
            json.dumps({**spec, "out_dir": tmp}),
        ]
        rows.append({"framework": "torch", "label": "torch (gpt.py's loop)"})
        rows[-1].update(run(command, threads, timeout))
        rows[-1]["files"] = sorted(p.name for p in Path(tmp).iterdir())
        if "wall_s" in rows[-1]:
            rows[-1]["evaluations"] = len(Path(tmp, "metrics.jsonl").read_text().splitlines())
    for row in rows:
        row["includes"] = END_TO_END_WORK
    return rows


def main(
    configs: Annotated[
        str,
        typer.Option(
            help="Comma-separated: small, lecture, lecture-bpe (GPT-2's options, 1024 BPE tokens)."
        ),
    ] = "small,lecture",
    quick: Annotated[
        bool, typer.Option("--quick", help="A tiny model only: under 2 minutes.")
    ] = False,
    torch_device: Annotated[
        str, typer.Option(help="auto (MPS, CUDA, CPU), cpu, cuda, mps.")
    ] = "auto",
    variants: Annotated[
        str, typer.Option(help=f"PyTorch variants: {', '.join(TORCH_VARIANTS)}.")
    ] = ",".join(TORCH_VARIANTS),
    gen_tokens: Annotated[int, typer.Option(help="Characters to generate (0: skip).")] = 3000,
    threads: Annotated[
        int,
        typer.Option(
            help="CPU threads for both frameworks (default: all cores).", show_default=False
        ),
    ] = 0,
    worker_timeout: Annotated[
        float,
        typer.Option(
            help="Seconds before a worker is stopped and marked timeout "
            f"(0: per config, {', '.join(f'{k} {v}' for k, v in TIMEOUTS.items())}).",
        ),
    ] = 0,
    repeats: Annotated[
        int,
        typer.Option(help="Runs of every worker, interleaved (MLX, PyTorch, MLX, ...)."),
    ] = 2,
    end_to_end: Annotated[
        bool,
        typer.Option(
            "--end-to-end",
            help="Also run both whole training loops on gpt.py's small configuration "
            "(2000 steps, evaluation included) and compare wall time and val loss.",
        ),
    ] = False,
    e2e_max_iters: Annotated[
        int, typer.Option(help="Steps of the end-to-end runs.", hidden=True)
    ] = END_TO_END["max_iters"],
    e2e_eval_iters: Annotated[
        int, typer.Option(help="Evaluation batches of the end-to-end runs.", hidden=True)
    ] = END_TO_END["eval_iters"],
    json_path: Annotated[
        str | None,
        typer.Option("--json", help="Results file (default: out/bench/compare-DATE.json)."),
    ] = None,
) -> None:
    """MLX vs PyTorch on the lecture's GPT: training and generation speed, peak memory.

    peak MB is each framework's own figure (MLX: mx.get_peak_memory; CUDA:
    max_memory_allocated; MPS: driver memory; CPU: the process's peak RSS); RSS MB is
    the worker process's peak resident memory. GFLOP/s counts the model's training
    FLOPs as nanoGPT's estimate_mfu does. With --repeats, each row is its median run,
    whole, with the range of the runs beside it.
    """
    names = ["quick"] if quick else [c.strip() for c in configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    torch_variants = [v.strip() for v in variants.split(",") if v.strip()]
    bad = [v for v in torch_variants if v not in TORCH_VARIANTS]
    if unknown or bad or gen_tokens < 0 or repeats < 1:
        err.print(
            f"error: unknown config {unknown} or variant {bad}, or --repeats below 1; see --help"
        )
        raise typer.Exit(2)
    threads = threads or os.cpu_count() or 1
    if quick:
        gen_tokens = min(gen_tokens, 300)
    jobs = [("mlx_worker.py", "mlx", "MLX")]
    jobs += [("torch_worker.py", v, f"torch {v}") for v in torch_variants]
    runs: dict[tuple[str, str], list[dict]] = {}
    for repeat in range(1, repeats + 1):
        for name in names:
            warmup, steps = STEPS[name]
            spec = {
                "config": CONFIGS[name],
                "warmup_steps": warmup,
                "train_steps": steps,
                "device": torch_device,
                "threads": threads,
            }
            for worker, variant, label in jobs:
                with err.status(f"{name}: {label} (run {repeat}/{repeats}) ..."):
                    gen = gen_tokens if variant in ("mlx", GEN_VARIANT) else 0
                    job = {**spec, "variant": variant, "gen_tokens": gen}
                    result = run_worker(worker, job, threads, worker_timeout or TIMEOUTS[name])
                result.update(config=name, label=label, gen_tokens=gen)
                result.setdefault("framework", "mlx" if variant == "mlx" else "torch")
                outcome = next((k for k in ("error", "skipped", "timeout") if k in result), "done")
                err.print(f"{name}: {label} (run {repeat}/{repeats}) {outcome}")
                runs.setdefault((name, label), []).append(result)
    results = [merge_runs(r) for r in runs.values()]

    e2e_config = {**END_TO_END, "max_iters": e2e_max_iters, "eval_iters": e2e_eval_iters}
    e2e_runs: dict[str, list[dict]] = {}
    for repeat in range(1, repeats + 1 if end_to_end else 1):
        with err.status(f"end to end (run {repeat}/{repeats}) ..."):
            timeout = worker_timeout or 3600
            for row in run_end_to_end(e2e_config, threads, torch_device, timeout):
                e2e_runs.setdefault(row["label"], []).append(row)
        err.print(f"end to end (run {repeat}/{repeats}) done")
    e2e = [merge_runs(r, by="wall_s") for r in e2e_runs.values()]

    devices = list(dict.fromkeys(r["device"] for r in results if "device" in r))
    machine = provenance()
    meta = {
        **machine,
        "native_bf16": native_bf16(),
        "devices": devices,
        "blas": sorted({r["blas"] for r in results if "blas" in r}),
        # Whether MLX's float32 rows ran their matmuls as TF32 (CUDA's default).
        "mlx_tf32": any(r.get("tf32") for r in results),
        "threads": threads,
        "repeats": repeats,
    }
    out = Console(width=None if sys.stdout.isatty() else 150)
    if results:
        out.print(training_table(results))
        counts = {f"{r['framework']} on {r['device']}": r["peak_memory_counts"]
                  for r in results if "peak_memory_counts" in r}  # fmt: skip
        out.print("peak MB counts: " + "; ".join(f"{k}: {v}" for k, v in counts.items()))
    if gen_tokens and results:
        out.print(generation_table(results, gen_tokens))
    if e2e:
        out.print(end_to_end_table(e2e, e2e_config))
    simd = ", ".join(f"{f} {'yes' if has else 'no'}" for f, has in machine["cpu_flags"].items())
    footer = [f"{machine['cpu']} ({simd})", ", ".join(devices)]
    footer += [f"BLAS: {'; '.join(meta['blas'])}" if meta["blas"] else ""]
    footer += [f"{threads} threads", f"env: {machine['env'] or 'no BLAS variables set'}"]
    if repeats > 1:
        footer.append(f"{repeats} interleaved runs each: the median run, range min-max")
    out.print(" | ".join(part for part in footer if part))
    if "OPENBLAS_CORETYPE" in machine["env"]:
        out.print("[yellow]OPENBLAS_CORETYPE is set: OpenBLAS may run slower kernels.")
    saved = {"results": results}
    if e2e:
        saved["end_to_end"] = {"config": e2e_config, "results": e2e}
    path = write_results("compare", saved, json_path, meta)
    chart = path.with_suffix(".png")
    out.print(f"wrote {path}" + (f" and {chart}" if bar_chart(results, chart) else ""))


if __name__ == "__main__":
    typer.run(main)
