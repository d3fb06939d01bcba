import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
COMPARE = str(Path(__file__).resolve().parents[1] / "bench" / "compare.py")


def test_quick_compare_writes_both_frameworks(cli, tmp_path):
    out = tmp_path / "results.json"
    result = cli(COMPARE, "--quick", "--json", str(out), "--gen-tokens", "50", timeout=600)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    rows = data["results"]
    by_label = {r["label"]: r for r in rows}
    assert {"MLX", "torch eager-gptpy", "torch eager-sdpa"} <= set(by_label)
    for label in ("MLX", "torch eager-gptpy", "torch eager-sdpa"):
        row = by_label[label]
        assert "error" not in row, row
        assert row["tokens_per_sec"] > 0 and row["ms_per_step"] > 0
        assert row["peak_memory_mb"] > 0 and 0 < row["peak_share"]
    for label in ("MLX", "torch eager-sdpa"):  # generation runs on these two
        assert by_label[label]["gen_cached_tokens_per_sec"] > 0
        assert by_label[label]["gen_crop_tokens_per_sec"] > 0
    assert by_label["MLX"]["params"] == by_label["torch eager-sdpa"]["params"]
    if sys.platform.startswith("linux"):  # the MLX worker must run on the optimized BLAS
        assert by_label["MLX"]["blas"].startswith("OpenBLAS"), by_label["MLX"]["blas"]
    meta = data["meta"]
    assert meta["versions"]["mlx"] and meta["versions"]["torch"] and meta["threads"] >= 1
    assert "Training" in result.stdout and "MLX ÷ this" in result.stdout
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_compare_rejects_an_unknown_config(cli):
    result = cli(COMPARE, "--configs", "huge")
    assert result.returncode == 2 and "unknown config" in result.stderr
