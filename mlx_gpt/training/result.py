"""What a run reports: a record every log interval, and a TrainResult at its end.

Records (one dict per log interval, to metrics.jsonl and to any reporter):
  step, tokens                   optimizer updates done, training tokens seen
  train_loss                     mean training-batch loss since the previous record
  train_bpc                      train_loss in bits per character (see data.Splits)
  val_loss, eval_train_loss      at evaluations: mean loss over eval_iters batches of
                                 each split, dropout off (the lecture's estimate_loss)
  val_bpc, eval_train_bpc        the same in bits per character, comparable across
                                 tokenizers (a BPE token holds several characters)
  lr, tokens_per_sec, chars_per_sec, ms_per_step, peak_memory_mb, elapsed_s
  event, reason                  why training stopped early (early_stop)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlx_gpt.data.tokens import Splits
from mlx_gpt.training import signals


@dataclass
class TrainResult:
    step: int
    best_val_loss: float
    best_step: int
    best_val_bpc: float | None  # best_val_loss in bits per character, if known
    stopped: str  # "finished", "early_stop" or "interrupted"
    signal: str  # the signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), or ""
    tokens_per_sec: float  # over the whole run, evaluations excluded
    chars_per_sec: float  # the same in characters of text (= tokens_per_sec for char)
    peak_memory_mb: float

    @property
    def exit_code(self) -> int:
        return signals.exit_code(self.signal)


def steps_record(
    state: dict[str, Any], losses: list[float], seconds: float, splits: Splits, cfg: Any
) -> dict[str, Any]:
    """The record of the steps since the last one: their `losses`, in `seconds`."""
    train_loss = sum(losses) / len(losses)
    tokens_per_sec = len(losses) * cfg.batch_size * cfg.block_size / seconds
    record = {"step": state["step"], "tokens": state["tokens"], "train_loss": train_loss}
    if chars_per_token := splits.chars_per_token():  # None for a foreign corpus
        record["train_bpc"] = splits.bits_per_char("train", train_loss)
    record["tokens_per_sec"] = round(tokens_per_sec, 1)
    if chars_per_token:
        record["chars_per_sec"] = round(tokens_per_sec * chars_per_token, 1)
    record["ms_per_step"] = round(1000 * seconds / len(losses), 2)
    return record
