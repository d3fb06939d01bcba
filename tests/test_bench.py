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


def test_without_native_bf16_autocast_is_skipped_not_emulated(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_NO_BF16", "1")  # as on a CPU without avx512_bf16 / amx_bf16
    out = tmp_path / "results.json"
    args = ["--quick", "--variants", "autocast", "--gen-tokens", "0", "--json", str(out)]
    result = cli(COMPARE, *args, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    row = next(r for r in data["results"] if r["label"] == "torch autocast")
    assert row["skipped"] == "no native bf16 on this CPU" and "tokens_per_sec" not in row
    assert "skipped: no native bf16" in result.stdout
    assert data["meta"]["native_bf16"] is False
    assert set(data["meta"]["cpu_flags"]) == {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}


def test_a_worker_past_its_time_becomes_a_timeout_row(cli, tmp_path):
    out = tmp_path / "results.json"
    args = ["--quick", "--variants", "eager-sdpa", "--worker-timeout", "0.5", "--json", str(out)]
    result = cli(COMPARE, *args, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    assert [r["label"] for r in rows] == ["MLX", "torch eager-sdpa"]
    assert all(r["timeout"] == 0.5 and "tokens_per_sec" not in r for r in rows)
    assert "timeout after 0.5 s" in result.stdout.replace("\n", " ")
    assert "quick: MLX timeout" in result.stderr


def test_native_bf16_comes_from_the_cpu_flags(monkeypatch):
    from common import native_bf16

    monkeypatch.delenv("BENCH_NO_BF16", raising=False)
    assert native_bf16({"avx2", "avx512f", "avx512_bf16"})
    assert native_bf16({"avx2", "amx_bf16"}) and native_bf16({"asimd", "bf16"})
    assert not native_bf16({"avx2", "fma"}) and not native_bf16({"avx2", "avx512f"})


def test_compare_rejects_an_unknown_config(cli):
    result = cli(COMPARE, "--configs", "huge")
    assert result.returncode == 2 and "unknown config" in result.stderr
