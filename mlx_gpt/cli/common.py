"""What every command shares: bad input as one line on stderr and an exit code."""

from __future__ import annotations

import functools

import typer

from mlx_gpt.errors import DISK_FULL_ERRNOS, DiskFull, UserError


def user_errors(fn):
    """Bad input ends the command with one line on stderr and exit code 2; a diverged
    run with 3, a full disk with 4 (see errors.py)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            if e.errno not in DISK_FULL_ERRNOS:
                raise
            typer.echo(f"error: {e.strerror}: {e.filename or 'a file'}; free some space", err=True)
            raise typer.Exit(DiskFull.exit_code) from None

    return wrapper
