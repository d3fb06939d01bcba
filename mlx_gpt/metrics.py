"""Metric records: the JSONL log of a run (progress.py shows the same dicts).

The training loop emits one dict per log interval (see training/loop.py); every
consumer is a callable that takes that dict, so adding a logger means adding a callable.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

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
