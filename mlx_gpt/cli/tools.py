"""`python -m mlx_gpt info`, `plot` and `samples`: what this machine runs on, the loss
curves, and the samples a run took as it learned."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mlx_gpt.cli.common import (
    apply_threads,
    environment_line,
    say,
    threads_option,
    user_errors,
    warnings_as_lines,
)
from mlx_gpt.errors import UserError


def _gflops(matmul, n: int, repeats: int = 10) -> float:
    import time

    matmul()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


@user_errors
def info_command(
    threads: Annotated[int, threads_option()] = 0,
    measure: Annotated[
        bool,
        typer.Option(
            "--measure",
            help="Also measure training steps here (about a minute on a Mac; minutes on a "
            "CPU): tok/s and peak memory per preset and dtype, and the run times they imply.",
        ),
    ] = False,
    presets: Annotated[
        str, typer.Option(help="With --measure: the presets to measure, comma-separated.")
    ] = "lecture,gpt2",
    json_file: Annotated[
        str | None,
        typer.Option("--json", help="With --measure: write every figure to this file too."),
    ] = None,
    max_memory: Annotated[
        float | None,
        typer.Option(
            help="With --measure: the memory budget in GB, as train.py's --max-memory. "
            "[default: 80% of what Metal recommends, of the GPU's memory, or of RAM]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Versions, device, the BLAS in use and a measured matmul speed (MLX against numpy).

    `--measure` then times a training step of each preset on this machine's default
    device (GPT-2 one sequence at a time, if it fits the memory budget) and works out
    what a whole run takes: `python -m mlx_gpt info --measure --json machine.json` gives
    a file to paste into an issue.
    """
    import os
    import platform

    import mlx.core as mx
    import numpy as np

    from mlx_gpt import __version__
    from mlx_gpt.machine import linux_blas

    apply_threads(threads)
    names = _measured_presets(measure, presets, json_file, max_memory)
    print(f"mlx-gpt {__version__} | mlx {mx.__version__} | numpy {np.__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(environment_line())
    if sys.platform.startswith("linux"):
        print(f"cblas_sgemm from: {linux_blas.sgemm_provider() or 'MLX bundled BLAS'}")
        status = linux_blas.status
        if status.problem:
            print(f"warning: {linux_blas.warning()}")
        if status.detail:
            print(status.detail.rstrip())
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"{var}={os.environ[var]}")
    n = 1024
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    a_np, b_np = np.array(a), np.array(b)
    mlx_speed = _gflops(lambda: mx.eval(a @ b), n)
    numpy_speed = _gflops(lambda: a_np @ b_np, n)
    print(
        f"matmul {n}x{n} fp32: MLX {mlx_speed:.1f} GFLOP/s, numpy {numpy_speed:.1f} GFLOP/s "
        f"(MLX at {mlx_speed / numpy_speed:.2f}x numpy)"
    )
    if measure:
        _measure(names, json_file, max_memory)


def _measured_presets(
    measure: bool, presets: str, json_file: str | None, max_memory: float | None
) -> list[str]:
    """The presets --measure is to measure, checked before anything is measured."""
    from pathlib import Path

    from mlx_gpt.presets import PRESETS

    if max_memory is not None and max_memory <= 0:
        raise UserError("--max-memory must be a positive number of GB")
    if (json_file or max_memory is not None) and not measure:
        raise UserError("--json and --max-memory go with --measure: add --measure")
    if json_file and not Path(json_file).resolve().parent.is_dir():
        raise UserError(f"--json {json_file}: its folder does not exist")
    names = [p.strip() for p in presets.split(",") if p.strip()]
    unknown = [p for p in names if p not in PRESETS or p == "finetune"]
    if unknown or not names:
        known = ", ".join(p for p in PRESETS if p != "finetune")
        raise UserError(
            f"--presets {presets!r}: {', '.join(unknown) or 'none given'}; "
            f"measure presets with a model of their own: {known}"
        )
    return names


def _measure(names: list[str], json_file: str | None, max_memory: float | None) -> None:
    """info --measure: progress on stderr, a line per figure on stdout."""
    import json
    from pathlib import Path

    from mlx_gpt.machine.measure import measure_machine
    from mlx_gpt.training.guards import memory_budget, size_text

    budget = memory_budget(max_memory)
    result = measure_machine(names, budget, on_progress=lambda what: say(f"measuring {what} ..."))
    m = result.machine
    print(f"memory budget {m['memory_budget_gb']:.2f} GB (of {m['ram_gb']:.0f} GB RAM) | "
          f"backend {m['backend']} | CPU bf16 units: {'yes' if m['bf16_native_cpu'] else 'no'}"
          f" | TF32: {'on' if m['tf32'] else 'off'}")  # fmt: skip
    for preset, auto in result.dtype_auto.items():
        speeds = ", ".join(f"{d} {g:,.0f}" for d, g in auto["gflops"].items())
        print(f"{preset}: --dtype auto chose {auto['chose']} (matmul GFLOP/s: {speeds})")
    for s in result.steps:
        head = f"{s.preset} {s.dtype}, {s.micro_batch} x {s.block_size} tokens"
        if s.skipped:
            print(f"{head}: not measured: {s.skipped}")
        else:
            print(f"{head}: {s.tokens_per_sec:,.0f} tok/s, {s.seconds[0] * 1000:,.0f} ms/step, "
                  f"peak {size_text(s.peak_bytes)}")  # fmt: skip
    for sum_ in result.arithmetic():
        print(f"so: {sum_['text']}")
    if json_file:
        Path(json_file).write_text(json.dumps(result.to_dict(), indent=1))
        print(f"wrote {json_file}")


@user_errors
def plot_command(
    runs: Annotated[list[str], typer.Argument(help="Run folders (out/PRESET ...).")],
    output: Annotated[
        str | None,
        typer.Option(help="Image file. [default: RUN/loss.png; needed for several runs]"),
    ] = None,
    svg: Annotated[bool, typer.Option("--svg", help="Also write an SVG beside the PNG.")] = False,
    metric: Annotated[
        str,
        typer.Option(
            help="loss (per token), bpc (bits per character: compares char and BPE runs) or "
            "hellaswag (its accuracy, for runs trained with --hellaswag)."
        ),
    ] = "loss",
    x: Annotated[str, typer.Option("--x", help="step, or time (minutes of training).")] = "step",
) -> None:
    """Draw train/val loss, the best val step, the overfitting region and the gap.

    Works while a run is still training. Several runs overlay in one figure:
    `python -m mlx_gpt plot out/small out/tiny --output compare.png`;
    a char and a BPE run at equal time:
    `python -m mlx_gpt plot out/small out/small-bpe --metric bpc --x time --output bpc.png`
    """
    from mlx_gpt.plot import plot_runs

    with warnings_as_lines():  # a damaged metrics line is skipped with one line
        written = plot_runs(runs, output, svg, metric, x)
    for path in written:
        print(f"wrote {path}")


@user_errors
def samples_command(
    run: Annotated[
        str | None,
        typer.Argument(help="Run folder. [default: the most recently trained run under out/]"),
    ] = None,
) -> None:
    """The samples a run took at each evaluation, step by step: watch it learn.

    `python -m mlx_gpt samples out/small`. Training writes them to samples.jsonl
    (--sample-tokens, --sample-prompt; 0 tokens turns them off).
    """
    from mlx_gpt.errors import UserError
    from mlx_gpt.runs.folder import RunFolder, latest_run
    from mlx_gpt.training.samples import SAMPLES_FILE, read_samples

    folder = RunFolder(run) if run else latest_run()
    found = read_samples(folder.path)
    if not found:
        raise UserError(f"{folder.path} has no {SAMPLES_FILE}; train with --sample-tokens above 0")
    for sample in found:
        print(f"--- step {sample['step']:,} | val loss {sample['val_loss']:.4f} ---")
        print(sample["prompt"] + sample["text"])
