"""Whether MLX has a backend to compute on, asked before anything imports mlx.core.

On Linux, plain `mlx` is the Python half only: its backend (`mlx/lib/libmlx.so`) comes
from `mlx-cpu` or `mlx-cuda-*`, which mlx-gpt's `cpu` and `cuda` extras install (never
both: each brings the same libmlx.so). Without one, `import mlx.core` fails with a
linker error that names neither, so mlx-gpt says which extra to install instead.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

INSTALL = "pip install 'mlx-gpt[cpu]' (or 'mlx-gpt[cuda]' for an NVIDIA GPU)"


def missing_backend(
    sys_platform: str = sys.platform,
    machine: str = platform.machine(),
    mlx_dirs: list[Path] | None = None,
) -> str | None:
    """One line that says what to install, or None when MLX can run here. `mlx_dirs` are
    the folders the mlx package is made of (found when not given: mlx is a namespace
    package, so a stray folder named mlx on the path is one of them)."""
    if sys_platform == "darwin" and machine != "arm64":
        return (
            f"MLX runs on Apple silicon (arm64) with macOS 14 or later, and this Mac is {machine}"
        )
    if mlx_dirs is None:
        spec = importlib.util.find_spec("mlx")
        if spec is None or not spec.submodule_search_locations:
            where = "pip install mlx-gpt" if sys_platform == "darwin" else INSTALL
            return f"MLX is not installed: {where}"
        mlx_dirs = [Path(p) for p in spec.submodule_search_locations]
    backend = any((d / "lib" / "libmlx.so").exists() for d in mlx_dirs)
    if sys_platform.startswith("linux") and not backend:
        return f"MLX is installed without a backend (mlx-cpu or mlx-cuda): {INSTALL}"
    return None
