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

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from common import CONFIGS, SIMD_FLAGS, cpu_flags, cpu_name, native_bf16
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
TORCH_VARIANTS = ["eager-gptpy", "eager-sdpa", "compile", "autocast"]
GEN_VARIANT = "eager-sdpa"  # PyTorch's generation runs on its best plain eager model
BLAS_ENV = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "MLX_GPT_NO_BLAS",
)
# (warm-up steps, timed steps) after the first (compiling) step, per configuration: a
# stable median within the 15-minute budget (a lecture step takes ~12 s on a 2-core CPU).
STEPS = {"quick": (2, 10), "small": (3, 15), "lecture": (0, 3)}
# Seconds a worker may take before it is stopped and its row marked `timeout`: about 5x
# what it takes on a 2-core AVX-512 CPU, to leave room for a CPU 6x slower than that
# (the lecture's crop loop alone samples 3000 characters at ~13 tok/s there).
TIMEOUTS = {"quick": 60, "small": 300, "lecture": 1800}

err = Console(stderr=True)


def run_worker(worker: str, spec: dict, threads: int, timeout: float) -> dict:
    """The worker's last JSON line. A worker past `timeout` seconds is stopped; what it
    had reported by then (its training figures) is kept and marked `timeout`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    command = [sys.executable, str(HERE / worker), json.dumps(spec)]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=HERE, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        lines = out.strip().splitlines()
        partial = json.loads(lines[-1]) if lines else {}
        return {**partial, "timeout": timeout}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": reason[:200]}
    return json.loads(lines[-1])


def versions() -> dict:
    found = {"python": platform.python_version()}
    for name in ("mlx", "torch", "numpy"):
        try:
            from importlib.metadata import version

            found[name] = version(name)
        except Exception:
            found[name] = None
    return found


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def status_cell(r: dict) -> str | None:
    """Why a row has no figures, or None when it has them."""
    if "error" in r:
        return f"[red]failed: {r['error']}"
    if "skipped" in r:
        return f"[yellow]skipped: {r['skipped']}"
    if "tokens_per_sec" not in r:
        return f"[red]timeout after {r['timeout']:g} s"
    return None


def training_table(results: list[dict]) -> Table:
    table = Table(title="Training (one optimizer step, fp32 unless the variant says)")
    table.add_column("config")
    table.add_column("framework", no_wrap=True)
    for col in ("ms/step", "tokens/s", "MLX ÷ this", "1st step s", "peak MB", "RSS MB"):
        table.add_column(col, justify="right")
    for col in ("GFLOP/s", "matmul peak", "% peak"):
        table.add_column(col, justify="right")
    for config in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == config]
        mlx = next((r for r in rows if r.get("framework") == "mlx"), {})
        for r in rows:
            if status := status_cell(r):
                table.add_row(config, r["label"], status, *[""] * 8)
                continue
            table.add_row(
                config,
                r["label"],
                f"{r['ms_per_step']:,.1f}",
                f"{r['tokens_per_sec']:,.0f}",
                ratio(mlx.get("tokens_per_sec"), r["tokens_per_sec"]),
                f"{r['compile_s']:.1f}",
                f"{r['peak_memory_mb']:,.0f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{r['model_flops'] / 1e9:,.1f}",
                f"{r['matmul_peak_flops'] / 1e9:,.0f}",
                f"{100 * r['peak_share']:.0f}%",
            )
        table.add_section()
    return table


def generation_table(results: list[dict], tokens: int) -> Table:
    table = Table(title=f"Generation (batch 1, sampling {tokens} characters, fp32)")
    table.add_column("config")
    table.add_column("framework", no_wrap=True)
    for col in ("KV cache tok/s", "crop loop tok/s", "cache ÷ crop", "MLX ÷ this (cache)"):
        table.add_column(col, justify="right")
    table.add_column("MLX ÷ this (crop)", justify="right")
    for config in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == config and r.get("gen_tokens")]
        mlx = next((r for r in rows if r["framework"] == "mlx"), {})
        for r in rows:
            if "gen_crop_tokens_per_sec" not in r:
                table.add_row(config, r["label"], status_cell(r) or "[red]timeout", *[""] * 4)
                continue
            cached, crop = r["gen_cached_tokens_per_sec"], r["gen_crop_tokens_per_sec"]
            table.add_row(
                config,
                r["label"],
                f"{cached:,.0f}",
                f"{crop:,.1f}",
                ratio(cached, crop),
                ratio(mlx.get("gen_cached_tokens_per_sec"), cached),
                ratio(mlx.get("gen_crop_tokens_per_sec"), crop),
            )
    return table


def bar_chart(results: list[dict], path: Path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [r for r in results if status_cell(r) is None]
    configs = list(dict.fromkeys(r["config"] for r in ok))
    if not configs:
        return False  # nothing measured: no chart
    fig = Figure(figsize=(11, 4 + 1.2 * len(configs)), layout="constrained")
    axes = fig.subplots(len(configs), 2, squeeze=False)
    for (train_ax, gen_ax), config in zip(axes, configs, strict=True):
        rows = [r for r in ok if r["config"] == config]
        colors = ["C0" if r["framework"] == "mlx" else "C1" for r in rows]
        train_ax.barh([r["label"] for r in rows], [r["tokens_per_sec"] for r in rows], color=colors)
        train_ax.set_title(f"{config}: training tokens/s")
        train_ax.invert_yaxis()
        gen = [r for r in rows if "gen_crop_tokens_per_sec" in r]
        labels, values = [], []
        for r in gen:
            labels += [f"{r['label']} KV cache", f"{r['label']} crop loop"]
            values += [r["gen_cached_tokens_per_sec"], r["gen_crop_tokens_per_sec"]]
        gen_ax.barh(labels, values, color=["C0", "C0", "C1", "C1"][: len(values)])
        gen_ax.set_title(f"{config}: generation tokens/s")
        gen_ax.invert_yaxis()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return True


def main(
    configs: Annotated[
        str, typer.Option(help="Comma-separated: small, lecture.")
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
    json_path: Annotated[
        str | None,
        typer.Option("--json", help="Results file (default: bench/results/DEVICE-DATE.json)."),
    ] = None,
) -> None:
    """MLX vs PyTorch on the lecture's GPT: training and generation speed, peak memory.

    peak MB is each framework's own figure (MLX: mx.get_peak_memory; CUDA:
    max_memory_allocated; MPS: driver memory; CPU: the process's peak RSS); RSS MB is
    the worker process's peak resident memory. GFLOP/s counts the model's training
    FLOPs as nanoGPT's estimate_mfu does; % peak divides them by a 2048x2048 matmul's
    speed measured in the same process.
    """
    names = ["quick"] if quick else [c.strip() for c in configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    torch_variants = [v.strip() for v in variants.split(",") if v.strip()]
    bad = [v for v in torch_variants if v not in TORCH_VARIANTS]
    if unknown or bad or gen_tokens < 0:
        err.print(f"error: unknown config {unknown} or variant {bad}; see --help")
        raise typer.Exit(2)
    threads = threads or os.cpu_count() or 1
    if quick:
        gen_tokens = min(gen_tokens, 300)
    results = []
    for name in names:
        warmup, steps = STEPS[name]
        spec = {
            "config": CONFIGS[name],
            "warmup_steps": warmup,
            "train_steps": steps,
            "device": torch_device,
            "threads": threads,
            "gen_tokens": gen_tokens,
        }
        jobs = [("mlx_worker.py", "mlx", "MLX")]
        jobs += [("torch_worker.py", v, f"torch {v}") for v in torch_variants]
        for worker, variant, label in jobs:
            with err.status(f"{name}: {label} ..."):
                gen = gen_tokens if variant in ("mlx", GEN_VARIANT) else 0
                job = {**spec, "variant": variant, "gen_tokens": gen}
                result = run_worker(worker, job, threads, worker_timeout or TIMEOUTS[name])
            result.update(config=name, label=label, gen_tokens=gen)
            result.setdefault("framework", "mlx" if variant == "mlx" else "torch")
            outcome = next((k for k in ("error", "skipped", "timeout") if k in result), "done")
            err.print(f"{name}: {label} {outcome}")
            results.append(result)

    devices = list(dict.fromkeys(r["device"] for r in results if "device" in r))
    flags = cpu_flags()
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": sys.argv,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_flags": {f: f in flags for f in SIMD_FLAGS},
        "native_bf16": native_bf16(),
        "devices": devices,
        "versions": versions(),
        "blas": sorted({r["blas"] for r in results if "blas" in r}),
        "threads": threads,
        "env": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
    }
    out = Console(width=None if sys.stdout.isatty() else 150)
    out.print(training_table(results))
    if gen_tokens:
        out.print(generation_table(results, gen_tokens))
    simd = ", ".join(f"{f} {'yes' if has else 'no'}" for f, has in meta["cpu_flags"].items())
    out.print(
        f"{meta['cpu']} ({simd}) | {', '.join(devices)} | BLAS: {'; '.join(meta['blas'])} | "
        f"{threads} threads | env: {meta['env'] or 'no BLAS variables set'}"
    )
    if "OPENBLAS_CORETYPE" in meta["env"]:
        out.print("[yellow]OPENBLAS_CORETYPE is set: OpenBLAS may run slower kernels.")
    device_name = "-".join(devices) or "none"
    path = (
        Path(json_path)
        if json_path
        else HERE
        / "results"
        / (f"{platform.system().lower()}-{device_name.replace(':', '')}-{meta['date'][:10]}.json")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    chart = path.with_suffix(".png")
    out.print(f"wrote {path}" + (f" and {chart}" if bar_chart(results, chart) else ""))


if __name__ == "__main__":
    typer.run(main)
