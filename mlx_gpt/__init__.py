"""mlx-gpt: the lecture's character-level GPT ("Let's build GPT"), in MLX."""

from mlx_gpt.machine import linux_blas

# Before anything imports mlx.core: on Linux this points MLX at an optimized BLAS.
linux_blas.setup()

__version__ = "0.1.0"
