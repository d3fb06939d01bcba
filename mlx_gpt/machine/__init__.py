"""Facts about the machine a run is on: the backend, the memory budget, what the CPU can do
and how the OS reports memory (facts.py, the one place every other module asks), the
weights' default dtype (dtypes.py), and the OpenBLAS forwarder for MLX's CPU backend on
Linux (linux_blas.py, blas_forward.c). Nothing here imports mlx.core at import time."""
