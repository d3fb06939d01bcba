"""Checkpoints: a folder with model.safetensors, optimizer.safetensors and state.json.

A checkpoint is written whole into `<name>.tmp/`, synced to disk, then swapped in by
renames: `<name>` -> `<name>.old`, `<name>.tmp` -> `<name>`, remove `<name>.old`.
Killed at any moment, the run keeps a complete checkpoint: either `<name>` or, in the
instant between the two renames, `<name>.old`, which `resolve` falls back to.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from mlx_gpt.errors import UserError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(
    path: str | Path, model: nn.Module, optimizer: optim.Optimizer, state: dict[str, Any]
) -> None:
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    mx.save_safetensors(str(tmp / MODEL_FILE), dict(tree_flatten(model.parameters())))
    mx.save_safetensors(str(tmp / OPTIMIZER_FILE), dict(tree_flatten(optimizer.state)))
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    for f in (MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, "."):
        _fsync(tmp / f)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def resolve(path: str | Path) -> Path | None:
    """The readable checkpoint folder for `path`, or None if there is none."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".old")):
        if (candidate / STATE_FILE).is_file() and (candidate / MODEL_FILE).is_file():
            return candidate
    return None


def load_state(path: Path) -> dict[str, Any]:
    return json.loads((path / STATE_FILE).read_text())


def load_model(path: Path, model: nn.Module) -> None:
    """Load weights strictly: every name and shape must match the model's."""
    try:
        model.load_weights(str(path / MODEL_FILE), strict=True)
    except ValueError as e:
        raise UserError(
            f"checkpoint {path} does not match its model configuration ({_first_line(e)})"
        ) from None


def load_optimizer(path: Path, optimizer: optim.Optimizer) -> None:
    flat = mx.load(str(path / OPTIMIZER_FILE))
    optimizer.state = tree_unflatten(list(flat.items()))


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0]
