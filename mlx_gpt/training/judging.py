"""What an evaluation adds to the losses: HellaSwag (--hellaswag), and a sample of the
model as it is now (--sample-tokens), so that a learner sees it learn."""

from __future__ import annotations

from typing import Any

from mlx_gpt.errors import UserError
from mlx_gpt.evals import hellaswag
from mlx_gpt.metrics import truncate_after
from mlx_gpt.training.samples import Samples


def read_hellaswag(cfg, tokenizer) -> list | None:
    """--hellaswag's examples, checked before anything is written; None without it."""
    if not cfg.hellaswag:
        return None
    if tokenizer is None or tokenizer.kind == "char":
        raise UserError("--hellaswag needs a BPE or GPT-2 tokenizer; a char run cannot encode it")
    return hellaswag.read_examples(cfg.hellaswag, cfg.hellaswag_limit)


class Judges:
    """HellaSwag and the samples, at each evaluation. A sampling prompt the tokenizer
    cannot encode is refused here, when the loop is built."""

    def __init__(self, start):
        self.start, self.cfg = start, start.cfg
        self.samples = Samples(start.run.path, start.cfg, start.tokenizer, start.model)

    def start_folder(self, resumed: bool, step: int) -> None:
        """A new run starts samples.jsonl afresh; a resumed one drops what it redoes."""
        if resumed:
            truncate_after(self.samples.path, step)
        else:
            self.samples.path.unlink(missing_ok=True)

    def judge(self, step: int, val_loss: float, record: dict[str, Any]) -> str | None:
        """HellaSwag into the record (every rank: they split the examples), then rank
        0's sample, if this evaluation has one, which it returns for the display."""
        start, every = self.start, self.cfg.hellaswag_every
        if start.hellaswag and (every == 0 or step % every == 0):
            scored = hellaswag.evaluate(start.model, start.tokenizer, start.hellaswag, start.ranks)
            record["hellaswag_acc_norm"], record["hellaswag_acc"] = scored.acc_norm, scored.acc
        if start.ranks.main and self.samples.due(step):
            return self.samples.take(step, val_loss)
        return None
