"""small against small-speedrun: steps, tokens and wall time to small's best val loss,
at character level and on a BPE; and Muon's cost at GPT-2's shapes.

    python bench/recipes.py [--cases char bpe muon-cost] [--pair BASELINE SPEEDRUN]
                            [--extra "FLAGS"] [--every N] [--json FILE]

Each training run is `python train.py` in a process of its own, one after the other:

    char   --preset small (the baseline), then --preset small-speedrun, on tiny
           Shakespeare's characters (--pair names two other presets, --extra adds
           flags to both: the benchmark's test runs tiny for a few steps)
    bpe    the same two with --tokenizer bpe --vocab-size 512 (the same sizes)

The baseline evaluates as its preset says; the speedrun every --every steps (25), so
that the first step at or below the baseline's best val loss is known to 25 steps. The wall time to
that step is the run's own training time, steps x its median ms a step, evaluations
left out (they differ between the two runs only in how often they come); each run's
whole-process wall time is kept beside it.

muon-cost times, at gpt2-speedrun's shapes (12 layers, 768 wide, the modern block),
one Muon update of the blocks' matrices, one AdamW update of the same matrices, and one
forward and backward pass at micro-batch 1 (1,024 tokens), and reports Muon's extra cost
against a step of 524,288 tokens: (muon - adamw) / (512 x the pass + muon).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_name, write_results  # noqa: E402

BPE = ["--tokenizer", "bpe", "--vocab-size", "512"]
CASES = {"char": [], "bpe": BPE}


def train(args: list[str], out: Path) -> dict:
    command = [sys.executable, str(ROOT / "train.py"), *args, "--out-dir", str(out)]
    command += ["--sample-tokens", "0"]  # samples are not what is compared
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"train.py {' '.join(args)} failed: {done.stderr.strip()[-300:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    step_ms = statistics.median(r["ms_per_step"] for r in records if "ms_per_step" in r)
    best_step, best = min(evaluations, key=lambda e: e[1])
    tokens_per_step = records[-1]["tokens"] / records[-1]["step"]
    return {
        "command": ["train.py", *args, "--sample-tokens", "0"],
        "wall_s": wall,
        "median_ms_per_step": step_ms,
        "tokens_per_step": tokens_per_step,
        "best_val_loss": best,
        "best_step": best_step,
        "evaluations": evaluations,
    }


def compare(case: str, work: Path, pair: list[str], extra: list[str], every: int) -> dict:
    """The baseline, then the speedrun, on one tokenization; the speedrun's steps to the
    baseline's best val loss."""
    baseline, speedrun = pair
    base = train(["--preset", baseline, *CASES[case], *extra], work / f"{case}-baseline")
    target = base["best_val_loss"]
    print(f"{case}: {baseline} best val {target:.4f} at {base['best_step']}", file=sys.stderr)
    fast_args = ["--preset", speedrun, *CASES[case], *extra, "--eval-interval", str(every)]
    fast = train(fast_args, work / f"{case}-speedrun")
    reached = next((s for s, v in fast["evaluations"] if v <= target), None)
    row = {"presets": pair, "target_val_loss": target, "baseline": base, "speedrun": fast}
    if reached is not None:
        base_s = base["best_step"] * base["median_ms_per_step"] / 1000
        fast_s = reached * fast["median_ms_per_step"] / 1000
        row.update(
            steps_to_target={"baseline": base["best_step"], "speedrun": reached},
            tokens_to_target={
                "baseline": base["best_step"] * base["tokens_per_step"],
                "speedrun": reached * fast["tokens_per_step"],
            },
            train_s_to_target={"baseline": base_s, "speedrun": fast_s},
            step_ratio=reached / base["best_step"],
            time_ratio=fast_s / base_s,
            step_cost_ratio=fast["median_ms_per_step"] / base["median_ms_per_step"],
        )
    return row


def muon_cost(repeats: int) -> dict:
    # mlx_gpt first: on Linux it points MLX at OpenBLAS before mlx.core loads.
    import mlx_gpt  # noqa: F401, I001
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_gpt.model.gpt import GPT
    from mlx_gpt.presets import preset_config
    from mlx_gpt.training.optimizer import AdamW, make_optimizer
    from mlx_gpt.training.step import value_and_grad

    cfg = preset_config("gpt2-speedrun")
    model = GPT(cfg.model_config(50257))
    mx.eval(model.parameters())
    matrices = {k: p for k, p in tree_flatten(model.trainable_parameters()) if k.startswith("h.")}
    matrices = tree_unflatten([(k, p) for k, p in matrices.items() if p.ndim == 2])
    grads = tree_unflatten(
        [(k, mx.random.normal(p.shape) * 1e-3) for k, p in tree_flatten(matrices)]
    )
    mx.eval(grads)
    muon = make_optimizer(cfg)
    muon.init(model.trainable_parameters())
    adamw = AdamW(learning_rate=1e-3)
    adamw.init(matrices)

    def timed(fn) -> float:
        fn()  # compiled and warm
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    muon_s = timed(lambda: mx.eval(muon.apply_gradients(grads, matrices)))
    adamw_s = timed(lambda: mx.eval(adamw.apply_gradients(grads, matrices)))
    loss_and_grad = value_and_grad(model)
    x = mx.random.randint(0, 50257, (1, cfg.block_size))
    pass_s = timed(lambda: mx.eval(loss_and_grad(model, x, x)))
    micro_batches = cfg.batch_size  # 512 sequences of 1,024 tokens, one at a time
    step_s = micro_batches * pass_s + muon_s
    return {
        "muon_update_s": muon_s,
        "adamw_update_s": adamw_s,
        "forward_backward_micro1_s": pass_s,
        "micro_batches_per_step": micro_batches,
        "step_s": step_s,
        "muon_extra_fraction": (muon_s - adamw_s) / step_s,
        "muon_fraction": muon_s / step_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=[*CASES, "muon-cost"],
                        choices=[*CASES, "muon-cost"])  # fmt: skip
    parser.add_argument("--pair", nargs=2, default=["small", "small-speedrun"],
                        metavar=("BASELINE", "SPEEDRUN"), help="the two presets")  # fmt: skip
    parser.add_argument("--extra", default="", help="more train.py flags for both runs")
    parser.add_argument("--every", type=int, default=25, help="the speedrun's eval interval")
    parser.add_argument("--repeats", type=int, default=5, help="muon-cost's timed calls")
    parser.add_argument("--json", help="results file [default: out/bench/recipes-DATE.json]")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        for case in args.cases:
            if case == "muon-cost":
                figures[case] = row = muon_cost(args.repeats)
                muon_s, adamw_s = row["muon_update_s"], row["adamw_update_s"]
                pass_s, extra = row["forward_backward_micro1_s"], row["muon_extra_fraction"]
                print(
                    f"muon-cost: Muon {muon_s:.2f} s, AdamW {adamw_s:.2f} s, a pass "
                    f"{pass_s:.2f} s: extra {100 * extra:.2f}% of a step",
                    flush=True,
                )
                continue
            extra = args.extra.split()
            figures[case] = row = compare(case, Path(scratch), args.pair, extra, args.every)
            if "step_ratio" in row:
                print(f"{case}: target {row['target_val_loss']:.4f}: steps "
                      f"{row['steps_to_target']}, {row['step_ratio']:.2f}x the steps, "
                      f"{row['time_ratio']:.2f}x the time", flush=True)  # fmt: skip
            else:
                print(f"{case}: {args.pair[1]} did not reach {row['target_val_loss']:.4f}")
    print(cpu_name())
    print(f"wrote {write_results('recipes', figures, args.json)}")


if __name__ == "__main__":
    main()
