"""What pip installs for each machine (the package's requirements, as pip reads them), and
the one line a user gets when MLX has no backend to run on."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from mlx_gpt.machine.backend import missing_backend

ROOT = Path(__file__).resolve().parents[1]


def installed(package: str, extras: set[str], env: dict[str, str]) -> set[str]:
    """Every requirement pip would install for `package[extras]` on the machine `env`
    describes (marker variables), following mlx's own requirements too."""
    names, todo, seen = set(), [(package, extras)], set()
    while todo:
        name, wanted = todo.pop()
        if (name, frozenset(wanted)) in seen:
            continue
        seen.add((name, frozenset(wanted)))
        for line in requires(name) or []:
            req = Requirement(line)
            if req.marker and not any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (wanted or {""})
            ):
                continue
            names.add(f"{req.name}[{','.join(sorted(req.extras))}]" if req.extras else req.name)
            if req.name == "mlx":  # mlx's own extras decide its backend
                todo.append(("mlx", set(req.extras)))
    return names


LINUX = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
MAC = {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"}
INTEL_MAC = {**MAC, "platform_machine": "x86_64"}


def test_the_cuda_extra_installs_mlxs_cuda_backend_and_no_mlx_cpu():
    cuda = installed("mlx-gpt", {"cuda"}, LINUX)
    assert "mlx[cuda]" in cuda and any(n.startswith("mlx-cuda") for n in cuda), cuda
    assert not {"mlx-cpu", "mlx[cpu]"} & cuda, cuda


def test_the_cpu_extra_installs_mlxs_cpu_backend_and_openblas_on_linux_only():
    cpu = installed("mlx-gpt", {"cpu"}, LINUX)
    assert {"mlx[cpu]", "mlx-cpu", "scipy-openblas32"} <= cpu, cpu
    assert not any(n.startswith("mlx-cuda") for n in cpu)
    mac = installed("mlx-gpt", {"cpu"}, MAC)
    assert "mlx" in mac and "mlx-metal" in mac and not {"mlx-cpu", "scipy-openblas32"} & mac


def test_an_intel_mac_gets_no_mlx_which_has_no_wheel_for_it():
    assert not {n for n in installed("mlx-gpt", set(), INTEL_MAC) if n.startswith("mlx")}


def test_mlx_without_a_backend_or_on_an_intel_mac_says_what_to_do(tmp_path):
    plain, backend = tmp_path / "plain" / "mlx", tmp_path / "backend" / "mlx"
    plain.mkdir(parents=True)
    line = missing_backend("linux", "x86_64", [plain])
    assert "without a backend" in line and "mlx-gpt[cpu]" in line and "mlx-gpt[cuda]" in line
    (backend / "lib").mkdir(parents=True)
    (backend / "lib" / "libmlx.so").write_bytes(b"")
    # mlx is a namespace package: a stray folder named mlx beside the real one is a part of
    # it, and the backend is found in any part.
    assert missing_backend("linux", "x86_64", [plain, backend]) is None
    assert missing_backend("darwin", "arm64", [plain]) is None  # Metal's mlx has no lib/
    assert "Apple silicon" in missing_backend("darwin", "x86_64", [backend])


def test_a_script_run_with_plain_mlx_on_linux_prints_one_line_and_exits(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("plain mlx lacks a backend only on Linux")
    # A plain `mlx` (the Python half, no mlx/lib/libmlx.so) ahead of the real one.
    (tmp_path / "mlx").mkdir()
    (tmp_path / "mlx" / "__init__.py").write_text("")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--preset", "tiny"],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: MLX is installed without a backend (mlx-cpu or mlx-cuda): "
        "pip install 'mlx-gpt[cpu]' (or 'mlx-gpt[cuda]' for an NVIDIA GPU)"
    ]
    assert not (tmp_path / "out").exists()
