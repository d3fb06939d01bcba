"""Make MLX's CPU backend fast on Linux. Runs when `mlx_gpt` is imported; Linux only.

Why this exists: the `mlx[cpu]` wheel links the netlib *reference* BLAS, so an fp32
matmul runs at ~7 GFLOP/s and a lecture-size training step is ~20x slower than
PyTorch on the same machine. Two process-wide fixes, both done here before
`mlx.core` is first imported:

1. Load OpenBLAS (from the `cmeel-openblas` wheel) with RTLD_GLOBAL. MLX calls
   `cblas_sgemm` & co. by symbol name; a library already in the global scope wins the
   dynamic linker's lookup, so MLX's matmuls run on OpenBLAS (~20x faster here).
   That OpenBLAS needs the GNU Fortran runtime `libgfortran.so.5` (Debian/Ubuntu:
   `apt-get install libgfortran5`). The copy inside the mlx-cpu wheel cannot stand in:
   auditwheel renamed its soname, so the linker never matches it to
   `libgfortran.so.5`. Without the runtime we fall back, quietly, to the bundled BLAS;
   `python -m mlx_gpt info` shows which one is in use.
2. Stop glibc from handing MLX's large buffers back to the OS after every step
   (mmap/munmap page faults on each allocation); `mallopt` keeps them in the heap.

macOS is untouched: MLX uses Metal and Accelerate there. Set MLX_GPT_NO_BLAS=1 to skip
both fixes (to measure what they buy).
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import warnings

BUNDLED = "bundled reference BLAS"
blas_in_use = BUNDLED  # updated by setup(); what `info` and the training banner print
_done = False

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 1 << 30


def _openblas_path() -> str | None:
    from importlib import metadata

    try:
        dist = metadata.distribution("cmeel-openblas")
    except metadata.PackageNotFoundError:
        return None
    path = dist.locate_file("cmeel.prefix/lib/libopenblas.so.0")
    return str(path) if os.path.exists(path) else None


def _load_openblas() -> str | None:
    """Load OpenBLAS into the global symbol scope; return a description, or None."""
    path = _openblas_path()
    if path is None:
        return None
    try:
        ctypes.CDLL("libgfortran.so.5", mode=ctypes.RTLD_GLOBAL)
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    lib.openblas_get_config.restype = ctypes.c_char_p
    lib.openblas_get_corename.restype = ctypes.c_char_p
    config = lib.openblas_get_config().decode().split()
    version = config[1] if len(config) > 1 else ""
    return f"OpenBLAS {version} ({lib.openblas_get_corename().decode()} kernels)"


def _keep_heap() -> None:
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)


class _DlInfo(ctypes.Structure):
    _fields_ = [
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    ]


def sgemm_provider() -> str | None:
    """The file whose `cblas_sgemm` the dynamic linker hands to MLX (first in global scope)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    try:
        address = ctypes.cast(libc.cblas_sgemm, ctypes.c_void_p)
    except AttributeError:  # not in the global scope: MLX binds its bundled BLAS
        return None
    info = _DlInfo()
    if not libc.dladdr(address, ctypes.byref(info)):
        return None
    return os.path.realpath(info.dli_fname.decode())


def setup() -> None:
    """Apply both fixes once. Safe to call again; a no-op off Linux."""
    global _done, blas_in_use
    if _done or not sys.platform.startswith("linux") or os.environ.get("MLX_GPT_NO_BLAS"):
        return
    _done = True
    _keep_heap()
    if "mlx.core" in sys.modules:
        # MLX has bound its BLAS symbols already; loading OpenBLAS now changes nothing.
        warnings.warn(
            "mlx.core was imported before mlx_gpt, so MLX keeps its slow reference BLAS; "
            "import mlx_gpt first",
            stacklevel=3,
        )
        blas_in_use = f"{BUNDLED} (mlx.core was imported before mlx_gpt)"
        return
    blas_in_use = _load_openblas() or BUNDLED
