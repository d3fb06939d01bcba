"""What the commands share: an error or a warning as one line on stderr with an exit
code, the --threads and --dtype options, and the line that names the device and BLAS."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer

from mlx_gpt.errors import DISK_FULL_ERRNOS, DiskFull, UserError
from mlx_gpt.machine.dtypes import DTYPES


def _label_flags_with_no_type() -> None:
    """typer 0.29's help labels every option with its type, flags too (`--resume
    <bool>`, even `--help <bool>`), though a flag takes no value: show none for them."""
    from typer.core import TyperOption

    labelled = getattr(TyperOption, "display_type_rich", None)
    if labelled is None or getattr(labelled, "_flags_unlabelled", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else labelled(self, ctx)

    display_type_rich._flags_unlabelled = True
    TyperOption.display_type_rich = display_type_rich


_label_flags_with_no_type()


def say(line: str) -> None:
    """One line on stderr: errors, warnings, summaries, everything that is not the output."""
    typer.echo(line, err=True)


def user_errors(fn):
    """Bad input ends the command with one line on stderr and exit code 2; a diverged
    run with 3, a full disk with 4 (see errors.py)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            say(f"error: {e}")
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            if e.errno not in DISK_FULL_ERRNOS:
                raise
            say(f"error: {e.strerror}: {e.filename or 'a file'}; free some space")
            raise typer.Exit(DiskFull.exit_code) from None

    return wrapper


def progress_lines(what: str, every_s: float = 10.0):
    """report(done, total): a line on stderr, "what: done of total (percent)", every
    `every_s` seconds and at the end, for long work that has no bar of its own."""
    import time

    last = [0.0]

    def report(done: int, total: int) -> None:
        if time.perf_counter() - last[0] >= every_s or done == total:
            last[0] = time.perf_counter()
            say(f"{what}: {done:,} of {total:,} ({done / max(total, 1):.0%})")

    return report


@contextmanager
def progress_report(what: str) -> Iterator[Callable[[int, int], None]]:
    """report(done, total) for long work: on a terminal, rich's bar on stderr, shown from
    the first report and gone at the end so that the result stands alone; elsewhere
    progress_lines."""
    import sys

    if not sys.stderr.isatty():
        yield progress_lines(what)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.progress import TimeRemainingColumn as Remaining

    columns = (TextColumn(what), BarColumn(), MofNCompleteColumn(), Remaining())
    bar = Progress(*columns, console=Console(stderr=True), transient=True)
    task = None

    def report(done: int, total: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(what, total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield report
    finally:
        bar.stop()


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Within the block, each warning (a damaged metrics line, a token cache that could
    not be written) is one line on stderr, without the source line Python adds."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_, **__: say(f"warning: {message}")
        yield


def threads_option(panel: str | None = None):
    return typer.Option(
        help="CPU threads for MLX's matmuls (OpenBLAS on Linux). [default: every core]",
        show_default=False,
        rich_help_panel=panel,
    )


DTYPE = typer.Option(
    help=f"{', '.join(DTYPES)}. [default: float32 on a CPU, the stored dtype on a GPU]",
    show_default=False,
)


def apply_threads(threads: int) -> None:
    """--threads: OpenBLAS's thread count for MLX's matmuls (0: every core)."""
    from mlx_gpt.machine import linux_blas

    if threads < 0:
        raise UserError("--threads must be >= 0 (0: every core)")
    if threads:
        linux_blas.set_threads(threads)


def environment_line() -> str:
    """Where the matmuls run: the GPU (Metal or CUDA) and its memory, or the CPU's BLAS."""
    from mlx_gpt.machine import linux_blas
    from mlx_gpt.machine.facts import Machine

    return Machine.detect().describe(blas=linux_blas.describe())


def blas_warning() -> None:
    """One line on stderr when MLX's matmuls run on the CPU's slow reference BLAS: why,
    and the fix. On a GPU the CPU's BLAS does not matter, so nothing is said."""
    from mlx_gpt.machine import linux_blas
    from mlx_gpt.machine.facts import Machine

    if Machine.detect().matmuls_on_cpu and (message := linux_blas.warning()):
        say(f"warning: {message}")
