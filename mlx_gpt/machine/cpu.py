"""What the CPU is and can do, read from the OS: its name and whether it has bfloat16
units. Imports nothing of MLX, so that the PyTorch benchmark workers can use it too."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path


def cpu_name() -> str:
    if sys.platform == "darwin":
        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True
        )
        return out.stdout.strip() or platform.processor()
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86 `flags`, aarch64 `Features` in /proc/cpuinfo)."""
    for line in _cpuinfo():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def native_bf16(flags: set[str] | None = None) -> bool:
    """Whether the CPU computes bfloat16 matmuls in hardware. Without it they are
    emulated, and a 2048^3 bf16 matmul takes minutes instead of milliseconds.
    BENCH_NO_BF16=1 answers no (to try the skip on a CPU that has it)."""
    if os.environ.get("BENCH_NO_BF16"):
        return False
    if flags is None:
        if sys.platform == "darwin":
            return platform.machine() == "arm64"  # Apple silicon
        flags = cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})  # x86; aarch64 says bf16


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []
