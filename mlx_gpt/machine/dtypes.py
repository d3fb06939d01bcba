"""The dtypes of weights: their names, the --dtype check, and the default per device."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from mlx_gpt.errors import UserError

# The dtypes that weights may be cast to (--dtype of import and generate.py).
DTYPES = ("float32", "float16", "bfloat16")


def dtype_named(name: str) -> mx.Dtype:
    """The MLX dtype called `name`, as "bfloat16" or as str(mx.bfloat16) spells it."""
    dtype = getattr(mx, name.removeprefix("mlx.core."), None)
    if not isinstance(dtype, mx.Dtype):
        raise UserError(f"{name!r} is not an MLX dtype")
    return dtype


def weights_dtype(name: str) -> mx.Dtype:
    """The dtype of --dtype, checked against DTYPES."""
    if name not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, not {name!r}")
    return dtype_named(name)


def default_dtype() -> str | None:
    """float32 on a CPU, which has no fast half-precision matmul; on a GPU, None: the
    dtype the weights are stored in."""
    return None if mx.default_device() == mx.gpu else "float32"


def dtype_of(model: nn.Module) -> str:
    """The name of the dtype the model's weights are held in, read off the weights."""
    from mlx.utils import tree_flatten

    _, first = tree_flatten(model.parameters())[0]
    return str(first.dtype).removeprefix("mlx.core.")


def set_dtype(model: nn.Module, dtype: str | None) -> None:
    """Cast the model's weights to `dtype` (None leaves them as stored)."""
    if dtype is not None:
        model.set_dtype(weights_dtype(dtype))
