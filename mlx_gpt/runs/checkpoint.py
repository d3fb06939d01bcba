"""Checkpoints: a folder with model.safetensors, optimizer.safetensors and state.json
(imported weights have no optimizer.safetensors: they are fine-tuned, never resumed).

A checkpoint is written whole into `<name>.tmp/`, synced to disk, then swapped in by
renames: `<name>` -> `<name>.old`, `<name>.tmp` -> `<name>`, remove `<name>.old`.
Killed at any moment, the run keeps a complete checkpoint: either `<name>` or, in the
instant between the two renames, `<name>.old`, which `resolve` falls back to.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from mlx_gpt.errors import DISK_FULL_ERRNOS, DiskFull, UserError, first_line
from mlx_gpt.runs.durable import fsync

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def save(
    path: str | Path,
    model: nn.Module,
    optimizer: optim.Optimizer | None,
    state: dict[str, Any],
) -> None:
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    weights = dict(tree_flatten(model.parameters()))
    moments = dict(tree_flatten(optimizer.state)) if optimizer is not None else {}
    files = (
        [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE]
        if optimizer is not None
        else [MODEL_FILE, STATE_FILE]
    )
    try:
        tmp.mkdir(parents=True)
        mx.save_safetensors(str(tmp / MODEL_FILE), weights)
        if optimizer is not None:
            mx.save_safetensors(str(tmp / OPTIMIZER_FILE), moments)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        for f in (*files, "."):
            fsync(tmp / f)
    except (OSError, RuntimeError) as e:
        # MLX reports a failed write as RuntimeError("[write] Unable to write ...")
        if isinstance(e, RuntimeError) and not str(e).startswith("[write]"):
            raise
        if isinstance(e, OSError) and e.errno not in DISK_FULL_ERRNOS:
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        needed = sum(a.nbytes for a in (*weights.values(), *moments.values())) / 2**20
        free = shutil.disk_usage(path.parent).free / 2**20
        kept = f"{path.name}/ keeps its previous state" if resolve(path) else "nothing saved"
        raise DiskFull(
            f"could not write checkpoint {path} ({needed:,.1f} MB; {free:,.0f} MB free "
            f"there, or a file-size limit): {kept}; free some space and rerun with --resume"
        ) from None
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def resolve(path: str | Path) -> Path | None:
    """The readable checkpoint folder for `path`, or None if there is none."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".old")):
        if (candidate / STATE_FILE).is_file() and (candidate / MODEL_FILE).is_file():
            return candidate
    return None


def load_state(path: Path) -> dict[str, Any]:
    file = path / STATE_FILE
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise _damaged(file, e) from None


def read_weights(path: Path) -> dict[str, mx.array]:
    return _read(path / MODEL_FILE)


def load_model(path: Path, model: nn.Module) -> None:
    """Load weights strictly: every name and shape must match the model's."""
    load_weights(path, model, read_weights(path))


def load_weights(path: Path, model: nn.Module, weights: dict[str, mx.array]) -> None:
    """Put `weights` (read from checkpoint `path`) into the model, strictly."""
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise UserError(
            f"checkpoint {path} does not match its model configuration ({first_line(e)})"
        ) from None


def load_optimizer(path: Path, optimizer: optim.Optimizer) -> None:
    optimizer.state = tree_unflatten(list(_read(path / OPTIMIZER_FILE).items()))


def _read(file: Path) -> dict[str, mx.array]:
    try:
        return mx.load(str(file))
    except (OSError, ValueError, RuntimeError) as e:
        raise _damaged(file, e) from None


def _damaged(file: Path, e: Exception) -> UserError:
    return UserError(
        f"{file} is damaged or truncated ({first_line(e)}); "
        "use the other checkpoint (--checkpoint best or latest) or train again"
    )


def rng_key() -> list[int]:
    """MLX's global random key as two ints, as state.json keeps it."""
    return [int(v) for v in np.array(mx.random.state[0])]


def restore_rng_key(key: list[int]) -> None:
    # mx.random.key(seed) is [seed >> 32, seed & 0xFFFFFFFF], so re-seeding restores any key.
    mx.random.seed((key[0] << 32) | key[1])


def load_source_weights(found: Path, model: nn.Module) -> None:
    """A source run's best/ weights in float32, the position table cropped to the new
    block size (as nanoGPT's crop_block_size)."""
    weights = {k: v.astype(mx.float32) for k, v in read_weights(found).items()}
    if "wpe.weight" in weights:  # the modern block has no position table
        weights["wpe.weight"] = weights["wpe.weight"][: model.config.block_size]
    load_weights(found, model, weights)


def restore(found: Path | None, model, optimizer, data_rng, state) -> list | None:
    """latest/'s weights, optimizer state, step and generators, into what prepare built;
    returns every rank's saved random key (a distributed run's), or None."""
    if found is None:
        return None
    load_model(found, model)
    load_optimizer(found, optimizer)
    optimizer.init(model.trainable_parameters())
    saved = load_state(found)
    data_rng.bit_generator.state = saved.pop("data_rng")
    restore_rng_key(saved.pop("mlx_key"))
    keys = saved.pop("mlx_keys", None)
    state.update(saved)
    return keys
