"""The memory table: the peak memory of one full GPT-2 (124M) training step.

    python bench/memory.py [--micro 1 2 4 8] [--block-size 1024] [--steps 2] [--n-layer 12]

For each micro-batch (sequences of --block-size tokens) it runs, each in a process of
its own so that one peak does not hide another:

    mlx fp32        float32 weights and compute
    mlx fp32 ckpt   the same with --activation-checkpointing
    mlx bf16        bfloat16 compute on float32 weights (memory only: a CPU without
                    bf16 units is slow in it, so its time is not a figure to quote)
    torch fp32      bench/torch_gpt.py, the same model and step, in float32

and prints, per row, the resident memory that the step added to the process (peak RSS
minus RSS before the first step), MLX's own peak counter where there is one, and
ms/step (the last of --steps, after the compiling first; none for bf16).

MLX's step is the one a gpt2 run takes (AccumulatingStep: AdamW a part at a time),
and its memory is that of the first step measured as --micro-batch auto measures it,
with MLX allocating no further ahead than the work (guards.working_set): without that,
MLX on a CPU allocates much of a step's graph before it runs, up to its memory limit,
and the peak says how far ahead it ran rather than what the step needs. PyTorch frees
as it goes, so its RSS is already that. The later steps run as training does, at the
memory budget, and give the time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, facts, peak_rss_mb, rss_mb, write_results  # noqa: E402

GPT2 = dict(vocab_size=50_304, n_layer=12, n_head=12, n_embd=768, dropout=0.0,
            activation="gelu_tanh", qkv_bias=True, tie_embeddings=True)  # fmt: skip
CASES = ("mlx fp32", "mlx fp32 ckpt", "mlx bf16", "torch fp32")


def mlx_case(case: str, micro: int, block: int, steps: int) -> dict:
    import mlx_gpt  # noqa: F401  (first: OpenBLAS before mlx.core)

    # isort: split
    import mlx.core as mx
    import numpy as np

    from mlx_gpt.distributed.ranks import Ranks
    from mlx_gpt.model.gpt import GPT, GPTConfig
    from mlx_gpt.training import guards
    from mlx_gpt.training.optimizer import AdamW
    from mlx_gpt.training.step import AccumulatingStep

    if mlx_gpt.machine.linux_blas.status.problem:  # the reference BLAS would measure nothing useful
        raise SystemExit(f"MLX without OpenBLAS: {mlx_gpt.machine.linux_blas.status.problem}")
    model = GPT(GPTConfig(block_size=block, **GPT2))
    model.checkpoint_blocks = case == "mlx fp32 ckpt"
    optimizer = AdamW(learning_rate=6e-4, betas=[0.9, 0.95], weight_decay=0.1)
    optimizer.init(model.trainable_parameters())
    dtype = mx.bfloat16 if case == "mlx bf16" else mx.float32
    # The step a gpt2 run takes (its micro-batches accumulate), on one micro-batch.
    step = AccumulatingStep(model, optimizer, 1.0, Ranks(), 1, dtype)
    rng = np.random.default_rng(0)
    x = mx.array(rng.integers(0, 50_257, (micro, block)).astype(np.int32))
    mx.eval(model.parameters(), optimizer.state, x)
    # The memory of the first step, measured as --micro-batch auto measures it: MLX
    # allocating no further ahead than the work (guards.working_set).
    before = rss_mb()
    mx.reset_peak_memory()
    with guards.working_set():
        step(x, x)
    memory = {"rss_mb": peak_rss_mb() - before, "mlx_peak_mb": mx.get_peak_memory() / 2**20}
    # Then the time of a step as training runs it, at the memory budget.
    guards.limit_memory(guards.memory_budget(None))
    times = []
    for _ in range(steps - 1):
        start = time.perf_counter()
        step(x, x)
        times.append(time.perf_counter() - start)
    return {**memory, "ms": 1000 * times[-1] if times else None}


def torch_case(micro: int, block: int, steps: int) -> dict:
    import torch
    from torch_gpt import TorchGPT, make_optimizer

    model = TorchGPT(block_size=block, **GPT2)
    optimizer = make_optimizer(model, 6e-4, (0.9, 0.95), 0.1, True)
    x = torch.randint(0, 50_257, (micro, block))
    for p in model.parameters():  # AdamW's moments exist before the first step, as in MLX
        optimizer.state[p]["exp_avg"] = torch.zeros_like(p)
        optimizer.state[p]["exp_avg_sq"] = torch.zeros_like(p)
        optimizer.state[p]["step"] = torch.tensor(0.0)
    before, times = rss_mb(), []
    for _ in range(steps):
        start = time.perf_counter()
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), x.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return {"rss_mb": peak_rss_mb() - before, "ms": 1000 * times[-1]}


def worker(args) -> None:
    GPT2["n_layer"] = args.n_layer
    if args.case == "mlx bf16":
        args.steps = 1  # memory only: a CPU without bf16 units takes minutes a sequence
    if args.case == "torch fp32":
        result = torch_case(args.micro[0], args.block_size, args.steps)
    else:
        result = mlx_case(args.case, args.micro[0], args.block_size, args.steps)
    print("RESULT " + json.dumps(result), flush=True)


MAC_RAM_GB = (8, 16, 24, 36, 64)
GB = 1024**3


def fits(rows: list[dict]) -> list[dict]:
    """What fits a Mac, from MLX's measured peaks: per case, a straight line through the
    smallest and largest micro-batch measured (peak = fixed + per sequence x micro),
    and, per Mac RAM size, the default budget and the largest power-of-two micro-batch
    under it (0: none)."""
    found = []
    for case in CASES:
        # MLX's counter holds everything (weights, moments, gradients); the step RSS of
        # a PyTorch row leaves out the weights and moments made before it.
        points = sorted((r["micro"], r["mlx_peak_mb"]) for r in rows
                        if r["case"] == case and r.get("mlx_peak_mb"))  # fmt: skip
        if len(points) < 2:
            continue
        (m0, p0), (m1, p1) = points[0], points[-1]
        per_seq = (p1 - p0) / (m1 - m0)
        fixed = p0 - per_seq * m0
        macs = []
        for ram in MAC_RAM_GB:
            # Training's default budget on a Mac of this RAM, in MB (facts.Machine).
            mac = facts.Machine.from_facts(
                sys_platform="darwin",
                device_info={"max_recommended_working_set_size": facts.metal_working_set(ram * GB)},
                ram_bytes=ram * GB,
            )
            budget = mac.memory_budget_bytes() / 2**20
            micro = 0
            while fixed + per_seq * 2 ** (micro.bit_length()) <= budget and micro < 512:
                micro = 2 ** (micro.bit_length())
            macs.append({"ram_gb": ram, "budget_mb": budget, "micro": micro})
        found.append({"case": case, "fixed_mb": fixed, "per_sequence_mb": per_seq,
                      "from_micro": [m0, m1], "macs": macs})  # fmt: skip
    return found


def fits_table(rows: list[dict]) -> list[str]:
    """fits(rows) as lines to print."""
    lines = []
    for f in fits(rows):
        cells = "  ".join(f"{m['ram_gb']} GB: {m['micro'] or '-':>3}" for m in f["macs"])
        lines.append(f"{f['case']:<14} {f['fixed_mb']:>7,.0f} MB + "
                     f"{f['per_sequence_mb']:>6,.0f} MB x micro | {cells}")  # fmt: skip
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--micro", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--n-layer", type=int, default=12,
                        help="fewer blocks, to see what a block costs (GPT-2 has 12)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--max-gb", type=float, default=20.0, help="skip a case past this")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per case")
    parser.add_argument("--json", help="results file [default: out/bench/memory-DATE.json]")
    parser.add_argument("--fits", nargs="+", metavar="JSON",
                        help="only what fits a Mac, from saved --json results (with --json: "
                        "written to that file too)")  # fmt: skip
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a worker's one case
    args = parser.parse_args()
    if args.case:
        return worker(args)
    if args.fits:
        rows = [r for f in args.fits for r in json.loads(Path(f).read_text())["rows"]]
        print("\n".join(fits_table(rows)))
        if args.json:
            sources = [Path(f).name for f in args.fits]
            write_results("memory-fits", {"from": sources, "fits": fits(rows)}, args.json)
        return None
    rows = []
    print(
        f"{cpu_name()}, {os.cpu_count()} cores; GPT-2 124M, block {args.block_size}, "
        f"{args.n_layer} layers"
    )
    print(f"{'case':<14} {'micro':>5} {'step RSS':>9} {'MLX peak':>9} {'ms/step':>9}")
    too_big: set[str] = set()
    for micro in args.micro:
        for case in args.cases:
            if case in too_big:
                continue
            size = ["--micro", str(micro), "--block-size", str(args.block_size),
                    "--n-layer", str(args.n_layer)]  # fmt: skip
            command = [sys.executable, __file__, "--case", case, *size, "--steps", str(args.steps)]
            try:
                out = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{case:<14} {micro:>5} over {args.timeout:.0f} s: skipped", flush=True)
                too_big.add(case)
                continue
            if out.returncode or "RESULT " not in out.stdout:
                print(f"{case:<14} {micro:>5} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            row = {"case": case, "micro": micro, **json.loads(out.stdout.split("RESULT ")[-1])}
            rows.append(row)
            mlx_peak = f"{row['mlx_peak_mb']:>6,.0f} MB" if "mlx_peak_mb" in row else f"{'-':>9}"
            ms = f"{row['ms']:>9,.0f}" if row["ms"] is not None else f"{'-':>9}"
            print(f"{case:<14} {micro:>5} {row['rss_mb']:>6,.0f} MB {mlx_peak} {ms}", flush=True)
            if row["rss_mb"] * 2 > args.max_gb * 1024:  # the next micro-batch would not fit
                too_big.add(case)
    settings = {k: getattr(args, k) for k in ("micro", "block_size", "n_layer", "steps", "cases")}
    path = write_results("memory", {"settings": settings, "rows": rows}, args.json)
    print("\n".join(fits_table(rows)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
