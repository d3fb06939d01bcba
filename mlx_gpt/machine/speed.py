"""`--dtype auto`, measured: which compute dtype is faster on this machine's device for a
model's own shapes, found once with a short matmul and kept in ~/.cache/mlx-gpt.

Why measure: bfloat16 is not fast everywhere. MLX's CPU backend computes it without the
CPU's bf16 units (on a Xeon with avx512_bf16 and amx_bf16 a 1024^3 bf16 matmul took 42x
the float32 one), and M1 and M2 GPUs have no native bf16. A rule by device would be
wrong on one of them; a measurement is right on each.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from mlx_gpt.machine.facts import Machine, cache_dir

CACHE_FILE = "dtype-auto.json"
CANDIDATES = ("float32", "bfloat16")
# bfloat16 is chosen only when clearly faster: its rounding costs a little loss.
MARGIN = 1.1


@dataclass(frozen=True)
class DtypeChoice:
    """What --dtype auto chose, and the matmul speeds (GFLOP/s) it chose by."""

    dtype: str
    gflops: dict[str, float]
    shape: tuple[int, int, int]  # (M, K, N) of the matmul measured

    def text(self) -> str:
        speeds = ", ".join(f"{d} {g:,.0f}" for d, g in self.gflops.items())
        return f"--dtype auto: {speeds} GFLOP/s on a {'x'.join(map(str, self.shape))} matmul"


def model_shape(block_size: int, n_embd: int) -> tuple[int, int, int]:
    """The MLP's up-projection for one sequence: the model's largest common matmul."""
    return (block_size, n_embd, 4 * n_embd)


def matmul_gflops(shape: tuple[int, int, int], dtype_name: str, seconds: float = 0.2) -> float:
    """GFLOP/s of (M, K) @ (K, N) in `dtype_name` on MLX's default device: the median of
    repeats after one to warm up, for about `seconds` (at least three)."""
    import mlx.core as mx

    m, k, n = shape
    dtype = getattr(mx, dtype_name)
    a, b = mx.random.normal((m, k)).astype(dtype), mx.random.normal((k, n)).astype(dtype)
    mx.eval(a, b)
    start = time.perf_counter()
    mx.eval(a @ b)  # note: mx.eval is the sync point, so the time is the matmul's
    first = time.perf_counter() - start
    times = []
    for _ in range(max(3, min(20, int(seconds / max(first, 1e-6))))):
        start = time.perf_counter()
        mx.eval(a @ b)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / sorted(times)[len(times) // 2] / 1e9


def choose_dtype(
    shape: tuple[int, int, int], machine: Machine | None = None, measure=matmul_gflops
) -> DtypeChoice:
    """The faster compute dtype for `shape` on this machine, measured once per machine
    and shape, then read from the cache. `measure` is injectable for tests."""
    import mlx.core as mx

    machine = machine or Machine.detect()
    key = "|".join(
        [machine.backend, str(machine.device_info.get("device_name", machine.cpu_name)),
         f"mlx {mx.__version__}", "x".join(map(str, shape))]
    )  # fmt: skip
    path = cache_dir() / CACHE_FILE
    cached = _read(path)
    if key not in cached:
        cached[key] = {d: measure(shape, d) for d in CANDIDATES}
        _write(path, cached)
    gflops = cached[key]
    dtype = "bfloat16" if gflops["bfloat16"] >= MARGIN * gflops["float32"] else "float32"
    return DtypeChoice(dtype, dict(gflops), shape)


def cached_choice(
    shape: tuple[int, int, int], machine: Machine | None = None
) -> DtypeChoice | None:
    """The choice already measured for `shape`, if any (the banner's figures)."""
    try:
        return choose_dtype(shape, machine, measure=_not_measured)
    except LookupError:
        return None


def _not_measured(shape, dtype):
    raise LookupError("not measured yet")


def _read(path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: measure again
    return data if isinstance(data, dict) else {}


def _write(path, data: dict) -> None:
    """Atomically, so that two runs starting at once never leave half a file; a cache
    that cannot be written is only measured again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass
