"""Samples at evaluations: watch gibberish turn into Shakespeare.

An evaluation generates --sample-tokens tokens from --sample-prompt with the KV-cache
decoder (generation.py) and a sampler seeded afresh, so that two samples differ by the
model alone, and appends {step, val_loss, prompt, text, seconds} to the run folder's
samples.jsonl. The sampler has its own key chain: training's random state (dropout) is
left as it was, so a run with samples draws the same batches and masks as one without.

Which evaluations sample is --sample-every's: every N-th, or by default (auto) each
one whose sample keeps the samples' seconds within 5% of the run's seconds so far
(its training steps and evaluations), and always the first and the last. A sample
costs a fraction of a second, while a run's time between two evaluations is many
steps: lecture and small sample at every evaluation; only a run that evaluates every
few steps skips some.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from mlx_gpt.generation.decoding import generate, start_ids
from mlx_gpt.generation.sampling import Sampler

SAMPLES_FILE = "samples.jsonl"
GPT2_PROMPT = "Hello, I'm a language model,"  # build-nanogpt's
SAMPLE_SHARE = 0.05  # --sample-every auto: the samples' most of the run's time


def sample_settings(cfg, tokenizer) -> tuple[int, str]:
    """(tokens, prompt): --sample-tokens and --sample-prompt, or their defaults for this
    tokenizer: 200 characters from a newline for char runs, 32 tokens otherwise (from
    build-nanogpt's prompt for GPT-2's tokenizer). No tokenizer, no samples."""
    if tokenizer is None:
        return 0, ""
    char = tokenizer.kind == "char"
    tokens = cfg.sample_tokens if cfg.sample_tokens is not None else (200 if char else 32)
    default = GPT2_PROMPT if tokenizer.kind == "gpt2" else "\n"
    return tokens, cfg.sample_prompt if cfg.sample_prompt is not None else default


class Samples:
    """Appends samples to samples.jsonl at the evaluations --sample-every picks (rank 0's
    business)."""

    def __init__(self, folder: Path, cfg, tokenizer, model):
        self.path = Path(folder) / SAMPLES_FILE
        self.tokenizer, self.model, self.seed = tokenizer, model, cfg.seed
        self.tokens, self.prompt = sample_settings(cfg, tokenizer)
        self.every, self.eval_interval = cfg.sample_every, cfg.eval_interval
        self.last_step = cfg.max_iters
        self.begun = time.perf_counter()  # this session's start, for auto
        self.samples_s = 0.0  # this session's samples' seconds, for auto
        self.last_s: float | None = None  # the latest sample's seconds: the next one's guess
        if self.tokens:
            start_ids(tokenizer, self.prompt)  # a prompt it cannot encode: one line, now

    def due(self, step: int) -> bool:
        """Whether the evaluation at `step` gets a sample."""
        if not self.tokens:
            return False
        if self.every != "auto":
            return (step // self.eval_interval) % int(self.every) == 0
        if self.last_s is None or step >= self.last_step:
            return True  # the first (what a sample costs is not known yet), and the last
        run_s = time.perf_counter() - self.begun
        return self.samples_s + self.last_s <= SAMPLE_SHARE * run_s

    def take(self, step: int, val_loss: float) -> str | None:
        """The sample of the model as it is now, appended to the file; None if off."""
        if not self.tokens:
            return None
        begun = time.perf_counter()
        try:
            result = generate(
                self.model, self.tokenizer, self.prompt, self.tokens, Sampler(seed=self.seed)
            )
        finally:
            self.model.train()  # generate() turned dropout off
        self.last_s = time.perf_counter() - begun
        self.samples_s += self.last_s
        line = {"step": step, "val_loss": val_loss, "prompt": self.prompt, "text": result.text,
                "seconds": round(self.last_s, 3)}  # fmt: skip
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return result.text


def read_samples(folder: str | Path) -> list[dict]:
    """A run's samples, in order; a damaged line (a kill mid-write) is skipped."""
    path = Path(folder) / SAMPLES_FILE
    if not path.is_file():
        return []
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            samples.append(json.loads(line))
        except ValueError:
            continue
    return samples
