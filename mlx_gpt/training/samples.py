"""Samples at every evaluation: watch gibberish turn into Shakespeare.

Each evaluation generates --sample-tokens tokens from --sample-prompt with the KV-cache
decoder (generation.py) and a sampler seeded afresh, so that two samples differ by the
model alone, and appends {step, val_loss, text} to the run folder's samples.jsonl. The
sampler has its own key chain: training's random state (dropout) is left as it was, so
a run with samples draws the same batches and masks as one without.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlx_gpt.generation import generate, start_ids
from mlx_gpt.sampling import Sampler

SAMPLES_FILE = "samples.jsonl"
GPT2_PROMPT = "Hello, I'm a language model,"  # build-nanogpt's


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
    """Appends one sample per evaluation to samples.jsonl (rank 0's business)."""

    def __init__(self, folder: Path, cfg, tokenizer, model):
        self.path = Path(folder) / SAMPLES_FILE
        self.tokenizer, self.model, self.seed = tokenizer, model, cfg.seed
        self.tokens, self.prompt = sample_settings(cfg, tokenizer)
        if self.tokens:
            start_ids(tokenizer, self.prompt)  # a prompt it cannot encode: one line, now

    def take(self, step: int, val_loss: float) -> str | None:
        """The sample of the model as it is now, appended to the file; None if off."""
        if not self.tokens:
            return None
        try:
            result = generate(
                self.model, self.tokenizer, self.prompt, self.tokens, Sampler(seed=self.seed)
            )
        finally:
            self.model.train()  # generate() turned dropout off
        line = {"step": step, "val_loss": val_loss, "prompt": self.prompt, "text": result.text}
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
