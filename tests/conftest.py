import subprocess
import sys
from pathlib import Path

import pytest

import mlx_gpt  # noqa: F401  (first: on Linux it must load OpenBLAS before mlx.core)

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, cwd: Path | None = None, timeout: float = 300):
    """Run `python <script or -m module> args` as a user would; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def cli():
    return run_script


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One trained tiny run (CLI, as a user runs it), shared by tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_script(str(ROOT / "train.py"), "--preset", "tiny", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out, result
