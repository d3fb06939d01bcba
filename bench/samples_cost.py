"""What a sample at every evaluation costs: its seconds beside the evaluation's.

    python bench/samples_cost.py [--presets small lecture] [--eval-batches 10]

For each preset it times the evaluation (estimate_loss) on a fresh model, per batch, and
scales it to the preset's --eval-iters; then it times one default sample (200 characters
from a newline, the KV-cache decoder). The ratio is what a sample adds to an evaluation
that has one; --sample-every auto (the default) then samples at about one evaluation in
ceil(ratio / 5%), so that the samples stay within 5% of the evaluations' time. The
median of --repeats runs of each.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name  # noqa: E402

import mlx_gpt  # noqa: E402, F401  (first: OpenBLAS before mlx.core)
from mlx_gpt.settings import resolve  # noqa: E402
from mlx_gpt.training import prepare  # noqa: E402
from mlx_gpt.training.evaluation import estimate_loss  # noqa: E402
from mlx_gpt.training.samples import SAMPLE_SHARE, Samples  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "lecture"])
    parser.add_argument("--eval-batches", type=int, default=10, help="batches timed per split")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{cpu_name()}")
    print(f"{'preset':<9} {'eval s':>8} {'sample s':>9} {'sample/eval':>12} {'auto: 1 in':>11}")
    for preset in args.presets:
        out = tempfile.mkdtemp()
        cfg = resolve(preset, None, {"out_dir": out})
        start = prepare(cfg)
        timed = replace(cfg, eval_iters=min(args.eval_batches, cfg.eval_iters))
        samples = Samples(Path(out), cfg, start.tokenizer, start.model)
        estimate_loss(start.model, start.splits, timed)  # warm up both
        samples.take(0, 0.0)
        evals, takes = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            estimate_loss(start.model, start.splits, timed)
            evals.append((time.perf_counter() - t) * cfg.eval_iters / timed.eval_iters)
            t = time.perf_counter()
            samples.take(0, 0.0)
            takes.append(time.perf_counter() - t)
        e, s = statistics.median(evals), statistics.median(takes)
        every = max(1, math.ceil(s / e / SAMPLE_SHARE))
        print(f"{preset:<9} {e:>8.2f} {s:>9.3f} {s / e:>11.1%} {every:>11}", flush=True)


if __name__ == "__main__":
    main()
