"""The machine's facts (mlx_gpt/machine/facts.py) on the platforms our users have, faked:
no Mac and no GPU is here, so each is built from the facts MLX and the OS report there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mlx_gpt.distributed.ranks import launched
from mlx_gpt.machine.facts import Machine, darwin_features, metal_working_set

GB = 1024**3

# `sysctl hw.optional.arm` on an M1 (no BF16) and an M2 (BF16), abridged.
M1_SYSCTL = """hw.optional.arm.FEAT_FP16: 1
hw.optional.arm.FEAT_BF16: 0
hw.optional.arm.FEAT_I8MM: 0
hw.optional.arm.FEAT_DotProd: 1"""
M2_SYSCTL = M1_SYSCTL.replace("FEAT_BF16: 0", "FEAT_BF16: 1")


def mac_m1_16gb(features: str = M1_SYSCTL) -> Machine:
    return Machine.from_facts(
        sys_platform="darwin",
        device_info={
            "device_name": "Apple M1",
            "architecture": "applegpu_g13g",
            "max_recommended_working_set_size": 10_700_000_000,
            "memory_size": 16 * GB,
        },
        ram_bytes=16 * GB,
        cpu_flags=darwin_features(features),
    )


def linux_cuda_80gb_gpu_on_24gb_host() -> Machine:
    return Machine.from_facts(
        sys_platform="linux",
        device_info={
            "device_name": "NVIDIA H100 80GB HBM3",
            "architecture": "sm_90",
            "total_memory": 80 * GB,
            "free_memory": 79 * GB,
        },
        ram_bytes=24 * GB,
        cpu_flags={"avx2", "fma"},
    )


def linux_cpu(flags=("avx2", "avx512f", "avx512_bf16")) -> Machine:
    return Machine.from_facts(sys_platform="linux", ram_bytes=24 * GB, cpu_flags=flags)


def test_a_mac_gpu_budgets_from_metals_working_set_and_reports_rss_in_bytes():
    mac = mac_m1_16gb()
    assert mac.backend == "metal"
    assert mac.memory_budget_bytes() == int(0.8 * 10_700_000_000)  # not of its 16 GB of RAM
    assert mac.maxrss_mb(512 * 2**20) == 512  # ru_maxrss is bytes on macOS
    assert not mac.matmuls_on_cpu


def test_an_m1_has_no_native_bf16_and_an_m2_has():
    assert darwin_features(M1_SYSCTL) == {"FEAT_FP16", "FEAT_DotProd"}
    assert not mac_m1_16gb().bf16_native
    assert mac_m1_16gb(M2_SYSCTL).bf16_native


def test_a_mac_gpus_banner_names_metal_and_the_chip_not_a_blas():
    words = mac_m1_16gb().describe(blas="OpenBLAS 0.3.30")
    assert "Metal" in words and "Apple M1" in words and "16 GB" in words
    assert "BLAS" not in words


def test_a_cuda_gpu_budgets_from_its_own_memory_never_the_hosts_nor_past_mlxs_limit():
    gpu = linux_cuda_80gb_gpu_on_24gb_host()
    assert gpu.backend == "cuda"
    assert gpu.memory_budget_bytes() == int(0.8 * 80 * GB)  # more than the host's 24 GB
    assert gpu.memory_budget_bytes(share=1.0) == int(0.95 * 80 * GB)  # MLX's allocator limit
    assert gpu.maxrss_mb(512 * 1024) == 512  # KiB on Linux
    words = gpu.describe(blas="OpenBLAS 0.3.30")
    assert "CUDA" in words and "H100" in words and "sm_90" in words and "BLAS" not in words
    assert not gpu.matmuls_on_cpu


def test_a_linux_cpu_budgets_from_ram_and_reads_bf16_from_its_flags():
    cpu = linux_cpu()
    assert cpu.backend == "cpu" and cpu.matmuls_on_cpu
    assert cpu.memory_budget_bytes() == int(0.8 * 24 * GB)
    assert cpu.maxrss_mb(512 * 1024) == 512
    assert cpu.bf16_native and linux_cpu(("avx2", "amx_bf16")).bf16_native
    assert linux_cpu(("asimd", "bf16")).bf16_native  # aarch64 Linux
    assert not linux_cpu(("avx2", "avx512f")).bf16_native
    assert "BLAS: OpenBLAS 0.3.30" in cpu.describe(blas="OpenBLAS 0.3.30")


def test_bench_no_bf16_says_no_on_a_cpu_that_has_it():
    cpu = Machine.from_facts(
        sys_platform="linux", ram_bytes=GB, cpu_flags={"amx_bf16"}, env={"BENCH_NO_BF16": "1"}
    )
    assert not cpu.bf16_native


def test_a_cpu_trial_waits_per_operation_and_a_gpu_trial_runs_at_the_budget():
    assert linux_cpu().trial_memory_limit(6 * GB) == 1
    assert mac_m1_16gb().trial_memory_limit(6 * GB) == 6 * GB
    assert linux_cuda_80gb_gpu_on_24gb_host().trial_memory_limit(6 * GB) == 6 * GB


def test_metals_recommended_working_set_is_two_thirds_of_ram_below_64gb_three_quarters_from():
    assert round(metal_working_set(32 * GB) / 2**20) == 21_845  # an M1 Max 32 GB reports this
    assert metal_working_set(64 * GB) == 48 * GB


def test_this_machine_is_detected_with_its_ram_and_rss():
    here = Machine.detect()
    assert here.sys_platform == sys.platform
    assert here.ram_bytes > 2**30
    if sys.platform.startswith("linux"):  # macOS's comes from sysctl hw.memsize
        assert here.ram_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 10 < here.rss_mb() <= here.peak_rss_mb() + 1


def test_rss_from_ps_agrees_with_proc_and_a_process_tree_counts_its_children():
    # macOS has no /proc: its path (ps) runs here too, and must read the same memory.
    linux, mac_way = Machine.detect(), Machine.from_facts(sys_platform="darwin", ram_bytes=GB)
    assert mac_way.rss_mb() == pytest.approx(linux.rss_mb(), rel=0.2)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; x = bytearray(300 * 2**20); x[::4096] = b'1' * "
         "len(x[::4096]); print(1, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        child.stdout.readline()  # its 300 MB are resident
        for machine in (linux, mac_way):
            assert machine.tree_rss_mb(os.getpid()) > machine.rss_mb() + 250
    finally:
        child.kill()
        child.wait()


def test_a_process_started_by_a_big_one_reports_its_own_peak_not_its_parents():
    # Linux carries ru_maxrss across exec: a child of this 300 MB process would say 300.
    held = bytearray(300 * 2**20)
    held[::4096] = b"1" * len(held[::4096])  # resident
    probe = "from mlx_gpt.machine.facts import Machine; print(Machine.detect().peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 200 < Machine.detect().peak_rss_mb()
    del held


@pytest.mark.parametrize(
    "env, backend",
    [
        ({"MLX_RANK": "0", "MLX_WORLD_SIZE": "2", "NCCL_HOST_IP": "10.0.0.1", "NCCL_PORT": "1"},
         "nccl"),
        ({"MLX_RANK": "1", "MLX_HOSTFILE": "hosts.json"}, "ring"),
        ({"MLX_RANK": "0", "MLX_IBV_DEVICES": "devices.json"}, "jaccl"),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, "mpi"),
        ({"PMI_SIZE": "2"}, "mpi"),
        ({"NCCL_HOST_IP": "10.0.0.1"}, ""),  # no rank: not started by mlx.launch
        ({}, ""),
    ],
)  # fmt: skip
def test_launched_knows_each_backend_mlx_launch_and_mpirun_set_up(env, backend):
    assert launched(env) == backend


def test_tf32_is_cudas_default_and_off_with_mlx_enable_tf32_0():
    gpu = linux_cuda_80gb_gpu_on_24gb_host()
    assert gpu.tf32
    off = Machine.from_facts(
        sys_platform="linux",
        device_info=dict(gpu.device_info),
        ram_bytes=24 * GB,
        env={"MLX_ENABLE_TF32": "0"},
    )
    assert not off.tf32 and not linux_cpu().tf32


def test_info_measure_json_writes_the_machines_figures_and_says_what_it_skipped(cli, tmp_path):
    out = tmp_path / "machine.json"
    args = ["--measure", "--presets", "tiny,gpt2", "--max-memory", "1", "--json", str(out)]
    result = cli("-m", "mlx_gpt", "info", *args)
    assert result.returncode == 0, result.stderr
    assert "measuring tiny: a float32 training step (batch 8 x 32) ..." in result.stderr
    data = json.loads(out.read_text())
    machine = data["machine"]
    assert machine["backend"] in ("cpu", "metal", "cuda") and machine["memory_budget_gb"] == 1.0
    assert {"ram_gb", "bf16_native_cpu", "tf32", "mlx", "device_info"} <= set(machine)
    assert set(data["dtype_auto"]) == {"tiny", "gpt2"}
    steps = {(s["preset"], s["dtype"]): s for s in data["steps"]}
    tiny = steps["tiny", data["dtype_auto"]["tiny"]["chose"]]
    assert tiny["tokens_per_sec"] > 0 and 0 < tiny["peak_bytes"] < 2**30
    assert tiny["parameters"] > 0 and tiny["micro_batch"] == 8 and tiny["block_size"] == 32
    # GPT-2's weights, gradients and moments alone are 2 GB: over a 1 GB budget, it is
    # not run, and the reason says so (on the JSON and on the screen).
    gpt2 = steps["gpt2", data["dtype_auto"]["gpt2"]["chose"]]
    assert "over the budget of 1.00 GB" in gpt2["skipped"] and "tokens_per_sec" not in gpt2
    assert "over the budget of 1.00 GB" in result.stdout
    minutes = data["arithmetic"][f"tiny_100_steps_minutes_{tiny['dtype']}"]
    assert minutes == pytest.approx(100 * tiny["seconds"][0] / 60)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--measure", "--presets", "nope"], "--presets 'nope': nope"),
        (["--json", "x.json"], "go with --measure"),
        (["--measure", "--max-memory", "-1"], "--max-memory must be a positive"),
    ],
)
def test_info_measure_bad_options_are_one_line_before_anything_runs(cli, args, message):
    result = cli("-m", "mlx_gpt", "info", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert message in result.stderr
