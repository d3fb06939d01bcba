"""Facts about the machine a run is on: the CPU (cpu.py), the weights' default dtype
(dtypes.py), and the OpenBLAS forwarder for MLX's CPU backend on Linux (linux_blas.py,
blas_forward.c). Nothing here imports mlx.core at import time of the package."""
