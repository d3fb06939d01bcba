"""Whole training runs of the presets, as README's quick start runs them.

    python bench/presets.py [--presets small overfit] [--json FILE]

For each preset, `python train.py --preset P` runs in a process of its own, into a new
folder, with every default (evaluations, samples, checkpoints, the plot). Its results
file keeps, per preset, the wall time of the whole process, the line the run ends with
and the figures in it (best val loss, its step, tok/s, peak memory), and every
evaluation from metrics.jsonl, so that README's "what a run prints" and the overfitting
valley are quoted from one file.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, cpu_name, write_results  # noqa: E402

# The line train.py ends with, e.g. "finished at step 2000: best val loss 1.7745 (2.5600
# bits/char) at step 2000 | 11,408 tok/s | peak 60 MB".
SUMMARY = re.compile(
    r"^(?P<stopped>\w+) at step (?P<step>\d+): best val loss (?P<best_val_loss>[\d.]+) "
    r"\((?P<best_val_bpc>[\d.]+) bits/char\) at step (?P<best_step>\d+) \| "
    r"(?P<tokens_per_sec>[\d,]+) tok/s \| peak (?P<peak_memory_mb>[\d,]+) MB$",
    re.M,
)


def run_preset(preset: str, work: Path) -> dict:
    out = work / preset
    command = [sys.executable, str(ROOT / "train.py"), "--preset", preset, "--out-dir", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1], "rc": done.returncode}
    match = SUMMARY.search(done.stdout)
    if match is None:
        return {"error": "no summary line in train.py's output", "rc": done.returncode}
    summary = {k: float(v.replace(",", "")) for k, v in match.groupdict().items() if k != "stopped"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [
        {k: r[k] for k in ("step", "val_loss", "eval_train_loss", "elapsed_s")}
        for r in records
        if "val_loss" in r
    ]
    return {
        "wall_s": wall,
        "summary_line": match.group(0),
        **summary,
        "evaluations": evaluations,
        "final_gap": evaluations[-1]["val_loss"] - evaluations[-1]["eval_train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["small", "overfit"])
    parser.add_argument("--json", help="results file [default: out/bench/presets-DATE.json]")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as work:
        for preset in args.presets:
            print(f"{preset}: python train.py --preset {preset} ...", file=sys.stderr, flush=True)
            figures[preset] = run_preset(preset, Path(work))
            row = figures[preset]
            if "error" in row:
                print(f"{preset}: failed: {row['error']}", flush=True)
            else:
                print(f"{preset}: {row['summary_line']} | {row['wall_s']:.0f} s whole", flush=True)
    print(cpu_name())
    path = write_results("presets", figures, args.json)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
