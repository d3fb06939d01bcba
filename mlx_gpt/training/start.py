"""--init-from RUN: a new run that starts from another run's weights (fine-tuning).

The new run takes RUN's model (architecture and weights, from best/) and tokenizer,
with a fresh optimizer at step 0, on its own --data. --block-size may shrink (the
position table is cropped, as nanoGPT's crop_block_size) but not grow; --dropout may
change; the rest of the model is RUN's. RUN is only read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import mlx.core as mx

from mlx_gpt import checkpoint
from mlx_gpt.config import MODEL_FIELDS, TrainConfig, first_difference, flag
from mlx_gpt.errors import UserError
from mlx_gpt.model import GPT, GPTConfig
from mlx_gpt.run import RunFolder

MAY_CHANGE = ("block_size", "dropout")
# what a fine-tuned run takes from its source unless told otherwise
INHERITED = (*MODEL_FIELDS, "tokenizer", "vocab_size")


def source_run(path: str) -> RunFolder:
    run = RunFolder(path)
    if not run.config_file.is_file():
        raise UserError(
            f"--init-from {path} is not a run folder (no config.json); give a folder made by "
            "train.py or `python -m mlx_gpt import`"
        )
    run.checkpoint("best")  # raises, saying what the folder has, if there is none
    return run


def source_settings(path: str) -> dict[str, Any]:
    """The source's model and tokenizer settings: the defaults of a run started from it."""
    saved = source_run(path).read_config()["train"]
    return {k: saved[k] for k in INHERITED if k in saved}


class Source:
    """The run a new run starts from, checked against the new run's settings."""

    def __init__(self, cfg: TrainConfig):
        self.run = source_run(cfg.init_from)
        self.model_config: GPTConfig = self.run.model_config()
        fixed = [n for n in INHERITED if n not in MAY_CHANGE]
        if found := first_difference(cfg, self.run.train_config(), fixed):
            name, mine, theirs = found
            raise UserError(
                f"--{flag(name)} {mine} differs from {self.run.path}'s {theirs}; --init-from "
                "keeps the source's model and tokenizer (only --block-size may shrink and "
                "--dropout change)"
            )
        if cfg.block_size > self.model_config.block_size:
            raise UserError(
                f"--block-size {cfg.block_size} is larger than {self.run.path}'s "
                f"{self.model_config.block_size}: its position table cannot grow; "
                f"use {self.model_config.block_size} or less"
            )
        self.model_config = replace(
            self.model_config, block_size=cfg.block_size, dropout=cfg.dropout
        )
        self.tokenizer = self.run.tokenizer()

    def load_into(self, model: GPT) -> None:
        """The source's best/ weights, in float32, position table cropped to the new block."""
        found = self.run.checkpoint("best")
        weights = {k: v.astype(mx.float32) for k, v in checkpoint.read_weights(found).items()}
        weights["wpe.weight"] = weights["wpe.weight"][: model.config.block_size]
        checkpoint.load_weights(found, model, weights)
