"""Make MLX's CPU backend fast on Linux. Runs when `mlx_gpt` is imported; Linux only.

Why this exists: the `mlx[cpu]` wheel links the netlib *reference* BLAS, so an fp32
matmul runs at ~5 GFLOP/s and a training step is 10-20x slower than PyTorch's on the
same machine. Two process-wide fixes, both made here before `mlx.core` is imported:

1. Hand MLX an optimized BLAS. The OpenBLAS in the `scipy-openblas32` wheel (the one
   NumPy's and SciPy's wheels use) picks its kernels at run time for the CPU it finds,
   from SSE3 to AVX-512 and on aarch64, and needs no Fortran runtime. Its symbols carry
   a `scipy_` prefix, though, and MLX calls `cblas_sgemm` & co. by their plain names. So
   a small C library of ours (`blas_forward.c`) exports the plain names and forwards to
   the prefixed ones. It is compiled once, on first import, into a cache folder (the C
   compiler is the one MLX's `mx.compile` already uses on a CPU), linked to this
   environment's OpenBLAS, and loaded with RTLD_GLOBAL: a library in the global scope
   wins the dynamic linker's lookup, so MLX's matmuls run on OpenBLAS.
   It is built at first import, not at install, because it must link the exact OpenBLAS
   of the environment it runs in; so the package stays one pure-Python wheel, and a
   missing compiler costs speed, never the install.
2. `mallopt` keeps glibc from handing MLX's buffers back to the OS after every step.

If the forwarder cannot be built or loaded, nothing fails: MLX keeps its reference
BLAS, and `warning()` says why and the one command that fixes it (the training banner,
generate's summary and `python -m mlx_gpt info` print it). macOS is untouched (Metal and
Accelerate). MLX_GPT_NO_BLAS=1 skips the forwarder; MLX_GPT_CACHE_DIR moves the cache.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from mlx_gpt.machine.facts import cache_dir

SOURCE = Path(__file__).with_name("blas_forward.c")
SLOWDOWN = "matmuls 20-60x slower"


@dataclass
class BlasStatus:
    """Which BLAS MLX's CPU backend calls, and if it is the slow one, why."""

    name: str = "reference BLAS"  # e.g. "OpenBLAS 0.3.34"
    core: str | None = None  # the kernel family OpenBLAS picked for this CPU
    threads: int | None = None
    forwarder: str | None = None  # path of the loaded forwarding library
    problem: str | None = None  # why MLX is on the reference BLAS
    fix: str | None = None  # the one command that fixes it
    detail: str | None = None  # e.g. the compiler's error, for `info`

    @property
    def fast(self) -> bool:
        return self.forwarder is not None


status = BlasStatus()  # filled in by setup()
_openblas: ctypes.CDLL | None = None
_done = False

# glibc <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 1 << 30


class _Unavailable(Exception):
    def __init__(self, problem: str, fix: str, detail: str | None = None):
        super().__init__(problem)
        self.problem, self.fix, self.detail = problem, fix, detail


def _openblas_file() -> Path:
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise _Unavailable("scipy-openblas32 is not installed", "pip install scipy-openblas32")
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    found = sorted(lib_dir.glob("libscipy_openblas*.so*"))
    if not found:
        raise _Unavailable(
            f"no OpenBLAS library in {lib_dir}", "pip install --force-reinstall scipy-openblas32"
        )
    return found[0]


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    raise _Unavailable(
        "no C compiler to build mlx-gpt's BLAS forwarder",
        "install one (Debian/Ubuntu: sudo apt-get install gcc; Fedora: sudo dnf install gcc)",
    )


def _build_forwarder(openblas: Path) -> Path:
    """The forwarder for this OpenBLAS file, compiled on first use and cached.

    The cache key covers the source, the OpenBLAS path and the machine, so a new venv
    or a new wheel gets its own build; the build is renamed into place, so concurrent
    first imports (several ranks, parallel tests) never load a half-written file."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + str(openblas).encode() + platform.machine().encode())
    target = cache_dir() / f"blas_forward-{key.hexdigest()[:16]}.so"
    if target.is_file():
        return target
    cc = _compiler()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
    except OSError as e:
        raise _Unavailable(
            f"cannot write mlx-gpt's cache folder {target.parent} ({e.strerror})",
            "export MLX_GPT_CACHE_DIR=/a/writable/folder",
        ) from None
    command = [cc, "-shared", "-fPIC", "-O2", "-o", tmp, str(SOURCE), str(openblas)]
    command.append(f"-Wl,-rpath,{openblas.parent}")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        done = subprocess.CompletedProcess(command, 1, "", str(e))
    if done.returncode != 0:
        os.unlink(tmp)
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise _Unavailable(
            f"mlx-gpt's BLAS forwarder did not compile ({last})",
            "python -m mlx_gpt info  (shows the compiler's error)",
            detail=" ".join(command) + "\n" + done.stderr,
        )
    os.replace(tmp, target)
    return target


def _load() -> None:
    global _openblas
    openblas = _openblas_file()
    forwarder = _build_forwarder(openblas)
    try:
        _openblas = ctypes.CDLL(str(openblas), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(forwarder), mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        raise _Unavailable(
            f"mlx-gpt's BLAS forwarder did not load ({e})",
            f"rm {forwarder}  (it is rebuilt on the next import)",
        ) from None
    provider = sgemm_provider()
    if provider != os.path.realpath(forwarder):
        raise _Unavailable(
            f"cblas_sgemm comes from {provider or 'nowhere'}, not mlx-gpt's forwarder",
            "check LD_PRELOAD and libraries imported before mlx_gpt",
        )
    _openblas.scipy_openblas_get_config.restype = ctypes.c_char_p
    _openblas.scipy_openblas_get_corename.restype = ctypes.c_char_p
    config = _openblas.scipy_openblas_get_config().decode().split()
    version = ".".join(config[1].split(".")[:3]) if len(config) > 1 else ""
    status.name = f"OpenBLAS {version}".strip()
    status.core = _openblas.scipy_openblas_get_corename().decode()
    status.threads = _openblas.scipy_openblas_get_num_threads()
    status.forwarder = str(forwarder)


def set_threads(n: int) -> None:
    """OpenBLAS's thread count for MLX's matmuls; a no-op without the forwarder."""
    if _openblas is not None:
        _openblas.scipy_openblas_set_num_threads(n)
        status.threads = _openblas.scipy_openblas_get_num_threads()


def describe() -> str:
    """One line: the BLAS behind MLX's matmuls."""
    if sys.platform == "darwin":
        return "Accelerate"
    if status.fast:
        plural = "" if status.threads == 1 else "s"
        return f"{status.name} ({status.core} kernels, {status.threads} thread{plural})"
    return status.name


def warning() -> str | None:
    """One line, when MLX is on its slow reference BLAS: why, and the fix."""
    if not sys.platform.startswith("linux") or status.fast or status.problem is None:
        return None
    return f"MLX is on its reference BLAS ({SLOWDOWN}): {status.problem}. Fix: {status.fix}"


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
    except AttributeError:  # it is not in the global scope, so MLX binds its bundled BLAS
        return None
    info = _DlInfo()
    if not libc.dladdr(address, ctypes.byref(info)):
        return None
    return os.path.realpath(info.dli_fname.decode())


def setup() -> None:
    """Apply both fixes once. Safe to call again; a no-op off Linux. Never raises."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return
    _done = True
    _keep_heap()
    if os.environ.get("MLX_GPT_NO_BLAS"):
        status.problem, status.fix = "MLX_GPT_NO_BLAS is set", "unset MLX_GPT_NO_BLAS"
    elif "mlx.core" in sys.modules:
        # MLX has bound its BLAS symbols already; loading OpenBLAS now changes nothing.
        status.problem = "mlx.core was imported before mlx_gpt"
        status.fix = "import mlx_gpt before mlx.core"
        warnings.warn(f"{warning()}", stacklevel=3)  # the script's mistake, so point at it
    else:
        try:
            _load()
        except _Unavailable as e:
            status.problem, status.fix, status.detail = e.problem, e.fix, e.detail
