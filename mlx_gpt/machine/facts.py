"""The machine a run is on, in one place: which backend MLX computes on (Metal, CUDA or the
CPU), how much memory a run may use there, what the CPU can do, and how the OS reports a
process's memory. Everything else asks `Machine.detect()`; tests build the machine of
another platform with `Machine.from_facts(...)`, since none here is a Mac or has a GPU.

Imports nothing of MLX at import time (detect() does, when called), so that the PyTorch
benchmark workers can load this file by its path (bench/common.py).
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

GB = 1024**3
MB = 1024**2

# Of what the device offers (Metal's recommended working set, the CUDA GPU's memory, RAM),
# the share a run may use by default (--max-memory overrides it).
BUDGET_SHARE = 0.8
# MLX's CUDA allocator limits itself to 95% of the GPU's memory (cuda/allocator.cpp).
CUDA_LIMIT_SHARE = 0.95
# CPU feature flags that mean bfloat16 arithmetic in hardware: x86 AVX-512 BF16 and AMX,
# Linux aarch64's `bf16`, and macOS's sysctl name for the same ARM feature.
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16", "FEAT_BF16"}


@dataclass(frozen=True)
class Machine:
    """What mlx-gpt needs to know of a machine. `device_info` is mx.device_info() of the
    GPU MLX computes on (empty on the CPU); `cpu_flags` are /proc/cpuinfo's flags on
    Linux and, on macOS, the `hw.optional.arm.FEAT_*` names that sysctl sets to 1."""

    sys_platform: str  # sys.platform: "darwin" or "linux"
    backend: str  # "metal", "cuda" or "cpu": where MLX's default device computes
    device_info: Mapping[str, object] = field(default_factory=dict)
    ram_bytes: int = 0
    cpu_flags: frozenset[str] = frozenset()
    cpu_name: str = ""
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_facts(
        cls,
        *,
        sys_platform: str,
        device_info: Mapping[str, object] | None = None,
        ram_bytes: int,
        cpu_flags=(),
        env: Mapping[str, str] | None = None,
        cpu_name: str = "",
        backend: str | None = None,
    ) -> Machine:
        """A machine described by its facts. The backend follows from the device's
        description unless given: Metal reports a recommended working set, CUDA a
        total_memory, and the CPU nothing."""
        info = dict(device_info or {})
        if backend is None:
            backend = (
                "metal"
                if "max_recommended_working_set_size" in info
                else "cuda"
                if "total_memory" in info
                else "cpu"
            )
        return cls(
            sys_platform, backend, info, ram_bytes, frozenset(cpu_flags), cpu_name, env or {}
        )

    @classmethod
    def detect(cls, *, ask_mlx: bool = True) -> Machine:
        """This machine, as MLX's default device and the OS report it. Without `ask_mlx`
        (the PyTorch benchmark workers), only the OS is asked and the backend is "cpu"."""
        backend, info = "cpu", {}
        if ask_mlx:
            import mlx.core as mx
        if ask_mlx and mx.default_device() == mx.gpu:
            backend = "metal" if mx.metal.is_available() else "cuda"
            info = dict(mx.device_info())
        return cls.from_facts(
            sys_platform=sys.platform,
            device_info=info,
            ram_bytes=ram_bytes(),
            cpu_flags=cpu_flags(),
            env=dict(os.environ),
            cpu_name=cpu_name(),
            backend=backend,
        )

    # What a run may use.

    def memory_budget_bytes(self, share: float = BUDGET_SHARE) -> int:
        """Bytes a run may use by default. On Metal, a share of the working set Metal
        recommends (a Mac's GPU shares RAM with the OS, and Metal swaps past it rather
        than failing). On CUDA, a share of the GPU's own memory, never of the host's RAM,
        and never above MLX's own limit. On the CPU, a share of RAM."""
        if self.backend == "metal":
            return int(share * self.device_info["max_recommended_working_set_size"])
        if self.backend == "cuda":
            total = self.device_info["total_memory"]
            return int(min(share, CUDA_LIMIT_SHARE) * total)
        return int(share * self.ram_bytes)

    def trial_memory_limit(self, budget: int) -> int:
        """The memory limit under which a trial step's peak is what the step needs. On
        the CPU, 1 byte: MLX then waits for each operation before it allocates the next
        one's output, where otherwise it would allocate most of the graph's outputs ahead
        of the work. On a GPU that same limit makes its allocator release its whole cache
        at every allocation and sync each kernel, so there the trial runs at the run's own
        budget, which bounds how far ahead MLX runs, as it will in training."""
        return 1 if self.backend == "cpu" else budget

    # What the CPU can do.

    @property
    def matmuls_on_cpu(self) -> bool:
        """Whether MLX's matmuls run on the CPU's BLAS (OpenBLAS, Accelerate)."""
        return self.backend == "cpu"

    @property
    def tf32(self) -> bool:
        """Whether MLX runs float32 matmuls as TF32 (a 10-bit mantissa, about 1e-3 apart
        from float32): its cuBLAS path does unless MLX_ENABLE_TF32=0. MLX 0.32's Metal
        backend reads no such switch; newer GPUs may, so tests set it off everywhere."""
        return self.backend == "cuda" and self.env.get("MLX_ENABLE_TF32", "1") != "0"

    @property
    def bf16_native(self) -> bool:
        """Whether the CPU computes bfloat16 in hardware (M1 does not; M2 and later, and
        x86 with AVX-512 BF16 or AMX, do). BENCH_NO_BF16=1 answers no, to try a CPU's
        fallback on one that has it."""
        if self.env.get("BENCH_NO_BF16"):
            return False
        return bool(self.cpu_flags & BF16_FLAGS)

    # How the OS reports memory.

    def maxrss_mb(self, value: int) -> float:
        """getrusage's ru_maxrss in MB: it is KiB on Linux and bytes on macOS."""
        return value / MB if self.sys_platform == "darwin" else value / 1024

    def peak_rss_mb(self) -> float:
        """This process's peak resident memory, in MB. On Linux from /proc's VmHWM: Linux
        carries ru_maxrss across exec, so a process started from a big one would report
        its parent's size."""
        if self.sys_platform.startswith("linux"):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return self.maxrss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

    def rss_mb(self, pid: int | None = None) -> float:
        """A process's resident memory now, in MB (this process by default): from /proc
        on Linux; from `ps` where there is no /proc (macOS)."""
        pid = os.getpid() if pid is None else pid
        if self.sys_platform.startswith("linux"):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
            return 0.0
        out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True)
        return int(out.stdout.strip() or 0) / 1024  # ps reports KiB on macOS and Linux

    def tree_rss_mb(self, root: int) -> float:
        """The resident memory of a process and all its descendants, in MB."""
        parents = _process_parents(self.sys_platform)
        tree, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            children = [p for p, pp in parents.items() if pp == parent and p not in tree]
            tree.update(children)
            frontier.extend(children)
        total = 0.0
        for pid in tree:
            try:
                total += self.rss_mb(pid)
            except (OSError, ValueError):
                pass  # it ended while we looked
        return total

    # The words a banner uses.

    def describe(self, blas: str = "") -> str:
        """Where the matmuls run, for the banner: the GPU and its memory, or the CPU and
        the BLAS behind it (`blas`, from linux_blas.describe())."""
        info = self.device_info
        if self.backend == "metal":
            return (
                f"device gpu | Metal: {info.get('device_name', 'Apple GPU')}, "
                f"{self.ram_bytes / GB:.0f} GB unified memory"
            )
        if self.backend == "cuda":
            return (
                f"device gpu | CUDA: {info.get('device_name', 'NVIDIA GPU')} "
                f"({info.get('architecture', '?')}), {info['total_memory'] / GB:.0f} GB"
            )
        if self.sys_platform == "darwin":
            blas = "Accelerate"
        return f"device cpu | BLAS: {blas}" if blas else "device cpu"


def cache_dir() -> Path:
    """Where mlx-gpt keeps what it measured or built for this machine (~/.cache/mlx-gpt)."""
    if os.environ.get("MLX_GPT_CACHE_DIR"):
        return Path(os.environ["MLX_GPT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlx-gpt"


def metal_working_set(ram_bytes: int) -> int:
    """The working set Metal recommends on a Mac with this much RAM: about 2/3 of it below
    64 GB and 3/4 from 64 GB (an M1 Max with 32 GB reports 21,845 MB)."""
    return int(ram_bytes * (3 / 4 if ram_bytes >= 64 * GB else 2 / 3))


# The OS's answers do not change while a process runs, and on macOS each is a sysctl
# subprocess: they are asked once.
@functools.cache
def cpu_name() -> str:
    if sys.platform == "darwin":
        return _sysctl("machdep.cpu.brand_string") or platform.processor()
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: x86 `flags` or aarch64 `Features` of /proc/cpuinfo on
    Linux; on macOS the ARM features (`FEAT_BF16`, ...) that sysctl reports present."""
    if sys.platform == "darwin":
        return frozenset(darwin_features(_sysctl("hw.optional.arm", value_only=False)))
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def darwin_features(sysctl_output: str) -> set[str]:
    """The features set to 1 in `sysctl hw.optional.arm`'s lines
    (`hw.optional.arm.FEAT_BF16: 1`)."""
    features = set()
    for line in sysctl_output.splitlines():
        name, _, value = line.partition(":")
        if name.startswith("hw.optional.arm.") and value.strip() == "1":
            features.add(name.removeprefix("hw.optional.arm."))
    return features


@functools.cache
def ram_bytes() -> int:
    if sys.platform == "darwin":
        return int(_sysctl("hw.memsize") or 0)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _sysctl(name: str, *, value_only: bool = True) -> str:
    """`sysctl -n NAME` (a leaf's value), or `sysctl NAME` (a node's "name: value" lines)."""
    try:
        out = subprocess.run(
            ["sysctl", "-n", name] if value_only else ["sysctl", name],
            capture_output=True,
            text=True,
        )
    except OSError:
        return ""
    return out.stdout.strip()


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _process_parents(sys_platform: str) -> dict[int, int]:
    """Each process's parent: from /proc on Linux, from `ps` elsewhere."""
    parents = {}
    if sys_platform.startswith("linux"):
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                    parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    pass
        return parents
    out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        pid, _, ppid = line.strip().partition(" ")
        if pid.isdigit() and ppid.strip().isdigit():
            parents[int(pid)] = int(ppid)
    return parents
