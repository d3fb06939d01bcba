"""mlx-gpt: the lecture's character-level GPT ("Let's build GPT"), in MLX."""

from mlx_gpt.machine import backend, linux_blas

# A missing backend is the one install mistake MLX reports as a linker error: say instead,
# in one line and without a traceback, which extra to install.
if _missing := backend.missing_backend():
    raise SystemExit(f"error: {_missing}")

# Before anything imports mlx.core: on Linux this points MLX at an optimized BLAS.
linux_blas.setup()

__version__ = "0.1.0"
