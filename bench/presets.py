"""Whole training runs of the presets, as README's quick start runs them.

    python bench/presets.py [--runs small overfit small-bpe small-bpe-relu] [--json FILE]
                            [--keep DIR]

Each run is `python train.py --preset P [flags]` in a process of its own, into a new
folder, with every other default (evaluations, samples, checkpoints, the plot):

    small            the small preset
    overfit          the overfit preset (the valley and the gap)
    small-bpe        small on a 512-token BPE with GPT-2's gelu_tanh and a tied head
    small-bpe-relu   the same with relu, to tell the tokenizer from the activation
    tiny             the tiny preset, in seconds (not run unless named)

The results file keeps, per run, the wall time of the whole process, the line the run
ends with and the figures in it (best val loss and bits per character, its step, tok/s,
chars/s, peak memory), and every evaluation from metrics.jsonl, so that README's "what
a run prints", the overfitting valley and docs/gpt2.md's char-against-BPE table are
quoted from one file. --keep keeps the run folders (to plot them).
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
    r"(?P<tokens_per_sec>[\d,]+) tok/s(?: \((?P<chars_per_sec>[\d,]+) chars/s\))? \| "
    r"peak (?P<peak_memory_mb>[\d,]+) MB$",
    re.M,
)
BPE = ["--tokenizer", "bpe", "--vocab-size", "512", "--tie-embeddings"]
RUNS = {
    "small": ["--preset", "small"],
    "overfit": ["--preset", "overfit"],
    "small-bpe": ["--preset", "small", *BPE, "--activation", "gelu_tanh"],
    "small-bpe-relu": ["--preset", "small", *BPE, "--activation", "relu"],
    "tiny": ["--preset", "tiny"],  # seconds: for trying the benchmark (and its test)
}
EVALUATION = ("step", "val_loss", "eval_train_loss", "val_bpc", "elapsed_s")


def run_preset(name: str, work: Path) -> dict:
    out = work / name
    command = [sys.executable, str(ROOT / "train.py"), *RUNS[name], "--out-dir", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["?"])[-1], "rc": done.returncode}
    match = SUMMARY.search(done.stdout)
    if match is None:
        return {"error": "no summary line in train.py's output", "rc": done.returncode}
    summary = {k: float(v.replace(",", "")) for k, v in match.groupdict().items()
               if k != "stopped" and v is not None}  # fmt: skip
    summary.setdefault("chars_per_sec", summary["tokens_per_sec"])  # char: one a token
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evaluations = [{k: r[k] for k in EVALUATION} for r in records if "val_loss" in r]
    return {
        "command": ["train.py", *RUNS[name]],
        "wall_s": wall,
        "summary_line": match.group(0),
        **summary,
        "evaluations": evaluations,
        "final_gap": evaluations[-1]["val_loss"] - evaluations[-1]["eval_train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=list(RUNS)[:4], choices=list(RUNS))
    parser.add_argument("--json", help="results file [default: out/bench/presets-DATE.json]")
    parser.add_argument("--keep", help="keep the run folders in this folder")
    args = parser.parse_args()
    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.keep or scratch)
        for preset in args.runs:
            print(f"{preset}: train.py {' '.join(RUNS[preset])} ...", file=sys.stderr, flush=True)
            figures[preset] = run_preset(preset, work)
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
