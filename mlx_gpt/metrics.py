"""Metric records: the JSONL log of a run, and the progress display that reads the same dicts.

The training loop emits one dict per log interval (see trainer.py); every consumer here
is a callable that takes that dict, so adding a logger means adding a callable.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

import mlx.core as mx

Record = dict[str, Any]


def peak_memory_mb() -> float:
    """MLX's peak memory so far, in MiB: the figure every record and result carries."""
    return mx.get_peak_memory() / 2**20


class JsonlLogger:
    """Appends each record as one JSON line, flushed, so a live run can be plotted."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def __call__(self, record: Record) -> None:
        self._f.write(json.dumps(record) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(path: str | Path) -> list[Record]:
    """Every record of a metrics.jsonl; a damaged line (a run killed mid-write) is skipped
    with a warning."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                warnings.warn(f"{path}:{n}: skipped a damaged metrics line", stacklevel=2)
                continue
            records.append(record)
    return records


def truncate_after(path: str | Path, step: int) -> None:
    """Drop records past `step`: a resumed run rewrites them from its checkpoint."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    os.replace(tmp, path)


def format_record(r: Record, max_iters: int) -> str:
    parts = [f"step {r['step']:>{len(str(max_iters))}}/{max_iters}"]
    if "train_loss" in r:
        parts.append(f"loss {r['train_loss']:.4f}")
    if "val_loss" in r:
        parts.append(f"val {r['val_loss']:.4f} (train {r['eval_train_loss']:.4f})")
    if "tokens_per_sec" in r:
        parts.append(f"{r['tokens_per_sec']:,.0f} tok/s")
        parts.append(f"{r['ms_per_step']:.1f} ms/step")
    if "peak_memory_mb" in r:
        parts.append(f"peak {r['peak_memory_mb']:,.0f} MB")
    if "event" in r:
        parts.append(f"{r['event']}: {r.get('reason', '')}")
    return " | ".join(parts)


class PlainProgress:
    """One line per record: for logs, pipes and CI."""

    def __init__(self, max_iters: int, stream: TextIO | None = None):
        self.max_iters = max_iters
        self.stream = stream or sys.stdout

    def __call__(self, record: Record) -> None:
        print(format_record(record, self.max_iters), file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live bar with step, loss, tokens/sec and ETA; evaluations print above it."""

    def __init__(self, max_iters: int, start_step: int = 0):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.max_iters = max_iters
        self.progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task(
            "train", total=max_iters, completed=start_step, loss="-", speed="-"
        )
        self.progress.start()

    def __call__(self, record: Record) -> None:
        fields = {}
        if "train_loss" in record:
            fields["loss"] = f"{record['train_loss']:.4f}"
        if "tokens_per_sec" in record:
            fields["speed"] = f"{record['tokens_per_sec']:,.0f}"
        self.progress.update(self.task, completed=record["step"], **fields)
        if "val_loss" in record or "event" in record:
            self.progress.console.print(format_record(record, self.max_iters))

    def close(self) -> None:
        self.progress.stop()


def progress_for(max_iters: int, start_step: int = 0):
    """The rich bar on a terminal, plain lines otherwise."""
    if sys.stdout.isatty():
        return RichProgress(max_iters, start_step)
    return PlainProgress(max_iters)
