"""`python -m mlx_gpt info`, `plot` and `samples`: what this machine runs on, the loss
curves, and the samples a run took as it learned."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mlx_gpt.cli.common import (
    apply_threads,
    environment_line,
    threads_option,
    user_errors,
    warnings_as_lines,
)


def _gflops(matmul, n: int, repeats: int = 10) -> float:
    import time

    matmul()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


@user_errors
def info_command(threads: Annotated[int, threads_option()] = 0) -> None:
    """Versions, device, the BLAS in use and a measured matmul speed (MLX against numpy)."""
    import os
    import platform

    import mlx.core as mx
    import numpy as np

    from mlx_gpt import __version__
    from mlx_gpt.machine import linux_blas

    apply_threads(threads)
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
