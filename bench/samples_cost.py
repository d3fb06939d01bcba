"""What the samples cost a run, and how many --sample-every auto takes.

    python bench/samples_cost.py [--presets small lecture] [--eval-batches 10]

For each preset, on a fresh model, it times a training step (after one that compiles
it, both undone), the evaluation (estimate_loss, timed over --eval-batches per split and
scaled to the preset's --eval-iters) and one default sample (200 characters from a
newline, the KV-cache decoder): the median of --repeats of each. Then it plays the
preset's whole run through Samples.due, the rule training uses, on those times: auto
samples at the first and last evaluations, and at any other while the samples' seconds
stay within 5% of the run's time so far.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, write_results  # noqa: E402

import mlx_gpt  # noqa: E402, F401  (first: OpenBLAS before mlx.core)
from mlx_gpt.data.tokens import get_batch  # noqa: E402
from mlx_gpt.settings import resolve  # noqa: E402
from mlx_gpt.training import prepare  # noqa: E402
from mlx_gpt.training.evaluation import estimate_loss  # noqa: E402
from mlx_gpt.training.samples import Samples  # noqa: E402
from mlx_gpt.training.step import build_step, trial_step  # noqa: E402


def evaluation_steps(cfg) -> list[int]:
    """The steps a run evaluates at: every eval_interval, and the last."""
    return sorted({*range(0, cfg.max_iters + 1, cfg.eval_interval), cfg.max_iters})


def auto_samples(samples: Samples, cfg, step_s: float, eval_s: float, sample_s: float) -> int:
    """How many samples auto takes over cfg's whole run, if each step, evaluation and
    sample costs what was measured. The run's clock is played by moving samples.begun."""
    samples.samples_s, samples.last_s = 0.0, None
    run_s, previous, taken = 0.0, 0, 0
    for step in evaluation_steps(cfg):
        run_s += (step - previous) * step_s + eval_s
        previous = step
        samples.begun = time.perf_counter() - run_s
        if samples.due(step):
            taken += 1
            samples.samples_s += sample_s
            samples.last_s = sample_s
            run_s += sample_s
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "lecture"])
    parser.add_argument("--eval-batches", type=int, default=10, help="batches timed per split")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="results file [default: out/bench/samples-cost-DATE.json]")
    args = parser.parse_args()
    rows = []
    print(f"{cpu_name()}")
    print(f"{'preset':<9} {'step ms':>8} {'eval s':>8} {'sample s':>9} {'run s':>9} "
          f"{'samples/run':>11} {'auto takes':>16}")  # fmt: skip
    for preset in args.presets:
        out = tempfile.mkdtemp()
        cfg = resolve(preset, None, {"out_dir": out})
        start = prepare(cfg)
        model, optimizer, ranks = start.model, start.optimizer, start.ranks
        timed = replace(cfg, eval_iters=min(args.eval_batches, cfg.eval_iters))
        samples = Samples(Path(out), cfg, start.tokenizer, model)
        step = build_step(model, optimizer, cfg, ranks)
        x, y = get_batch(start.splits.train, cfg.batch_size, cfg.block_size, start.data_rng)
        trial_step(step, model, optimizer, x, y)  # warm up all three: the step compiles
        estimate_loss(model, start.splits, timed)
        samples.take(0, 0.0)
        steps, evals, takes = [], [], []
        for _ in range(args.repeats):
            steps.append(trial_step(step, model, optimizer, x, y)[0])
            t = time.perf_counter()
            estimate_loss(model, start.splits, timed)
            evals.append((time.perf_counter() - t) * cfg.eval_iters / timed.eval_iters)
            t = time.perf_counter()
            samples.take(0, 0.0)
            takes.append(time.perf_counter() - t)
        st, e, s = (statistics.median(v) for v in (steps, evals, takes))
        n_evals = len(evaluation_steps(cfg))
        run_s = cfg.max_iters * st + n_evals * e
        taken = auto_samples(samples, cfg, st, e, s)
        share = n_evals * s / run_s  # of the run's time, were every evaluation sampled
        print(f"{preset:<9} {st * 1000:>8.1f} {e:>8.2f} {s:>9.3f} {run_s:>9.0f} "
              f"{share:>10.1%} {taken:>6} of {n_evals:<6}", flush=True)  # fmt: skip
        rows.append({"preset": preset, "step_ms": st * 1000, "eval_s": e, "sample_s": s,
                     "run_s": run_s, "samples_share": share,
                     "auto_takes": taken, "evaluations": n_evals})  # fmt: skip
    print(f"wrote {write_results('samples-cost', {'rows': rows}, args.json)}")


if __name__ == "__main__":
    main()
