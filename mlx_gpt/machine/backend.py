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
    mlx_dir: Path | None = None,
) -> str | None:
    """One line that says what to install, or None when MLX can run here. `mlx_dir` is
    the installed mlx package's folder (found when not given)."""
    if sys_platform == "darwin" and machine != "arm64":
        return (
            f"MLX runs on Apple silicon (arm64) with macOS 14 or later, and this Mac is {machine}"
        )
    if mlx_dir is None:
        spec = importlib.util.find_spec("mlx")
        if spec is None or not spec.submodule_search_locations:
            where = "pip install mlx-gpt" if sys_platform == "darwin" else INSTALL
            return f"MLX is not installed: {where}"
        mlx_dir = Path(next(iter(spec.submodule_search_locations)))
    if sys_platform.startswith("linux") and not (mlx_dir / "lib" / "libmlx.so").exists():
        return f"MLX is installed without a backend (mlx-cpu or mlx-cuda): {INSTALL}"
    return None
