"""The prepare benchmark: `python -m mlx_gpt prepare` beside nanoGPT's OpenWebText pipeline.

    python bench/prepare.py [--mb 500] [--workers N] [--work DIR]

It makes a corpus of documents (default 500 MB of JSON lines) that does not repeat
itself: Shakespeare's lines recombined, and words drawn at random from its vocabulary,
so that no tokenizer's word cache flatters one pipeline. Both pipelines then tokenize
it with the same byte-level BPE (50,257 tokens, learned once on a sample) on the same
cores, one after the other, and this prints tokens/s and the peak resident memory of
each pipeline's whole process tree (workers included), sampled from /proc (from `ps` on macOS).

nanoGPT's pipeline is data/openwebtext/prepare.py's, with the tokenizer swapped:
`datasets.map(num_proc=N)` over the documents (one token list per document, the
end-of-text id appended), then the lists written into one np.memmap in 1,024 batches.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, tree_rss_mb, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "mlx_gpt" / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")

NANOGPT = r"""
import sys, numpy as np
from datasets import load_dataset
from tokenizers import Tokenizer
corpus, tok_file, out, num_proc = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
enc = Tokenizer.from_file(tok_file)
eot = enc.token_to_id("<|endoftext|>")
dataset = load_dataset("json", data_files=corpus, split="train")
def process(example):
    ids = enc.encode(example["text"], add_special_tokens=False).ids
    ids.append(eot)
    return {"ids": ids, "len": len(ids)}
tokenized = dataset.map(process, remove_columns=["text"], desc="tokenizing", num_proc=num_proc)
arr_len = np.sum(tokenized["len"], dtype=np.uint64)
arr = np.memmap(out, dtype=np.uint16, mode="w+", shape=(arr_len,))
total_batches = 1024
idx = 0
for batch_idx in range(total_batches):
    batch = tokenized.shard(num_shards=total_batches, index=batch_idx, contiguous=True)
    batch = batch.with_format("numpy")
    arr_batch = np.concatenate(batch["ids"])
    arr[idx : idx + len(arr_batch)] = arr_batch
    idx += len(arr_batch)
arr.flush()
print("TOKENS", int(arr_len))
"""


def make_corpus(path: Path, megabytes: int, seed: int = 0) -> int:
    """JSON lines of documents, each 20 to 200 lines: a Shakespeare line, or as many
    random words of its vocabulary. Returns the documents written."""
    rng = np.random.default_rng(seed)
    lines = [line for line in TEXT.splitlines() if line.strip()]
    words = np.array(sorted(set(TEXT.split())))
    target, written, docs = megabytes << 20, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < target:
            n = int(rng.integers(20, 200))
            picks = rng.integers(0, len(lines), n)
            random_words = words[rng.integers(0, len(words), (n, 8))]
            body = "\n".join(
                lines[p] if coin else " ".join(w)
                for p, coin, w in zip(picks, rng.random(n) < 0.5, random_words, strict=True)
            )
            line = json.dumps({"text": body}) + "\n"
            f.write(line)
            written += len(line)
            docs += 1
    return docs


def learn_tokenizer(corpus: Path, out: Path, chars: int = 20_000_000) -> None:
    """The BPE both pipelines use, learned as `prepare --tokenizer bpe` learns one."""
    from mlx_gpt.data.tokenizing import EOT
    from mlx_gpt.tokenizer import BPETokenizer

    sample, size = [], 0
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            sample.append(json.loads(line)["text"])
            size += len(sample[-1])
            if size >= chars:
                break
    BPETokenizer.train(sample, 50_257, special_tokens=[EOT]).hf.save(str(out))


def measure(command: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak tree RSS (MB) and stdout+stderr of a command."""
    start = time.perf_counter()
    # The output goes to a file: progress bars would fill a pipe and stop the command.
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - start
        log.seek(0)
        output = log.read()
    if proc.returncode:
        raise SystemExit(f"{command[:4]} failed:\n{output[-2000:]}")
    return seconds, peak, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=500, help="corpus size in MB")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="cores for both")
    parser.add_argument("--work", help="scratch folder [default: a new temporary one]")
    parser.add_argument("--json", help="results file [default: out/bench/prepare-DATE.json]")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="prepare-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    if not corpus.is_file() or corpus.stat().st_size < args.mb << 20:
        print(f"writing a {args.mb} MB corpus to {corpus} ...", flush=True)
        make_corpus(corpus, args.mb)
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf-cache"), "HF_HUB_OFFLINE": "1"}
    py = sys.executable
    tok = work / "tok" / "tokenizer.json"
    if not tok.is_file():  # the shared tokenizer: a 50,257-token BPE learned on a sample
        tok.parent.mkdir(exist_ok=True)
        learn_tokenizer(corpus, tok)
    rows = []
    ours = work / "ours"
    subprocess.run(["rm", "-rf", str(ours)], check=True)
    seconds, peak, _ = measure(
        [py, "-m", "mlx_gpt", "prepare", str(corpus), "--out-dir", str(ours),
         "--tokenizer", "bpe", "--tokenizer-path", str(tok), "--workers", str(args.workers)],
        env,
    )  # fmt: skip
    meta = json.loads((ours / "meta.json").read_text())
    tokens = sum(s["tokens"] for s in meta["splits"].values())
    rows.append(("mlx_gpt prepare", tokens, seconds, peak))
    subprocess.run(["rm", "-rf", str(work / "hf-cache")], check=True)
    seconds, peak, output = measure(
        [py, "-c", NANOGPT, str(corpus), str(tok), str(work / "train.bin"), str(args.workers)], env
    )
    rows.append(("nanoGPT's pipeline", int(output.split("TOKENS")[-1].split()[0]), seconds, peak))
    print(f"\n{cpu_name()}, {args.workers} workers, {corpus.stat().st_size / 1e6:,.0f} MB corpus")
    print(f"{'pipeline':<20} {'tokens':>13} {'seconds':>8} {'tokens/s':>11} {'peak RSS':>9}")
    for name, tokens, seconds, peak in rows:
        print(
            f"{name:<20} {tokens:>13,} {seconds:>8.1f} {tokens / seconds:>11,.0f} {peak:>6,.0f} MB"
        )
    ratio = (rows[0][1] / rows[0][2]) / (rows[1][1] / rows[1][2])
    print(f"mlx_gpt prepare / nanoGPT's pipeline: {ratio:.2f}x tokens/s")
    figures = {
        "corpus_mb": corpus.stat().st_size / 1e6,
        "workers": args.workers,
        "rows": [
            {
                "pipeline": name,
                "tokens": tokens,
                "seconds": seconds,
                "tokens_per_sec": tokens / seconds,
                "peak_rss_mb": peak,
            }
            for name, tokens, seconds, peak in rows
        ],
        "ratio_tokens_per_sec": ratio,
    }
    print(f"wrote {write_results('prepare', figures, args.json)}")


if __name__ == "__main__":
    main()
