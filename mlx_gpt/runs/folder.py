"""A run folder: what a training run leaves behind, and how to find one again.

out/<preset>/
  config.json      resolved TrainConfig, model config, package version, command line
  vocab.json       the character vocabulary (char), or
  tokenizer.json   the byte-level BPE (bpe, gpt2), read by Hugging Face `tokenizers`
  tokens/          the tokenized splits, so a resume does not tokenize again
  metrics.jsonl    one record per log interval (see training/loop.py)
  best/  latest/   checkpoints (see checkpoint.py)
  loss.png         the loss curves (see plot.py)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlx_gpt import __version__
from mlx_gpt.config import TrainConfig
from mlx_gpt.errors import UserError
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.runs import checkpoint
from mlx_gpt.tokenizer import HF_FILE, BPETokenizer, Tokenizer, load_tokenizer

DEFAULT_ROOT = Path("out")


class RunFolder:
    """A run folder's paths, and what its config.json says (read once, when first asked)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_file = self.path / "config.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.best = self.path / "best"
        self.latest = self.path / "latest"
        self._config: dict[str, Any] | None = None  # config.json, parsed

    def has_checkpoint(self) -> bool:
        return any(checkpoint.resolve(p) for p in (self.best, self.latest))

    def check_new(self, hint: str) -> None:
        """Refuse to write a new run over a file or over a run that holds checkpoints;
        `hint` says what to do instead."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out-dir {self.path} is a file; give a folder")
        if self.has_checkpoint():
            raise UserError(f"{self.path} already holds a trained run; {hint}")

    def write_config(
        self,
        cfg: TrainConfig,
        model: GPTConfig,
        command: list[str],
        data_sha256: str = "",
        source: str = "",
    ) -> None:
        payload = {
            "mlx_gpt_version": __version__,
            "command": command,
            "data_sha256": data_sha256,  # a resumed run must train on the same text
            "train": cfg.to_dict(),
            "model": asdict(model),
        }
        if source:  # imported weights record where they came from (see importing.py)
            payload["source"] = source
        tmp = self.config_file.with_name("config.json.tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        os.replace(tmp, self.config_file)
        self._config = payload

    def read_config(self) -> dict[str, Any]:
        if self._config is None:
            if not self.config_file.is_file():
                raise UserError(f"{self.path} is not a run folder (no config.json)")
            try:
                config = json.loads(self.config_file.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise UserError(f"{self.config_file} is damaged ({e})") from None
            if not isinstance(config, dict) or not isinstance(config.get("train"), dict):
                raise UserError(f"{self.config_file} is damaged (it has no train settings)")
            self._config = config
        return self._config

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.read_config()["train"])

    def model_config(self) -> GPTConfig:
        return GPTConfig.from_dict(self.read_config()["model"])

    def tokenizer(self, required: bool = True, path: str | None = None) -> Tokenizer | None:
        """The run's tokenizer. A run trained on GPT-2 ids with no tokenizer at hand
        saved none: then GPT-2's from `path` (--tokenizer-path), or, if not required, None."""
        kind = self.read_config()["train"].get("tokenizer", "char")
        if path:
            return BPETokenizer.gpt2(path)
        if not required and kind == "gpt2" and not (self.path / HF_FILE).is_file():
            return None
        if kind == "gpt2" and not (self.path / HF_FILE).is_file():
            raise UserError(
                f"{self.path} holds no tokenizer (it trained on GPT-2 ids without one); "
                f"pass --tokenizer-path with GPT-2's tokenizer files"
            )
        return load_tokenizer(self.path, kind)

    def checkpoint(self, which: str = "best") -> Path:
        """The folder of checkpoint `which` (best or latest), or a UserError saying what to do."""
        found = checkpoint.resolve(self.path / which)
        if found is None:
            there = sorted(
                p.name for p in self.path.glob("*/") if "." not in p.name and checkpoint.resolve(p)
            )
            if there:
                raise UserError(
                    f"no checkpoint {which!r} in {self.path}; it has: {', '.join(there)} "
                    "(choose with --checkpoint)"
                )
            raise UserError(
                f"no {which} checkpoint in {self.path}; train one first with `python train.py`"
            )
        return found

    def load_model(
        self, which: str = "best", tokenizer_path: str | None = None
    ) -> tuple[GPT, Tokenizer]:
        """The model of checkpoint `which`, in eval mode, and its tokenizer."""
        found = self.checkpoint(which)
        config, tokenizer = self.model_config(), self.tokenizer(path=tokenizer_path)
        # The model may have more rows than the tokenizer has tokens (--vocab-multiple),
        # never fewer.
        if config.vocab_size < tokenizer.vocab_size:
            raise UserError(
                f"{self.path}: config.json says {config.vocab_size} tokens but its "
                f"tokenizer has {tokenizer.vocab_size}; the run folder is damaged"
            )
        model = GPT(config)
        checkpoint.load_model(found, model)
        model.eval()
        return model, tokenizer


def source_run(path: str | Path) -> RunFolder:
    """The run folder that --init-from names: it must hold a config.json and best/."""
    run = RunFolder(path)
    if not run.config_file.is_file():
        raise UserError(
            f"--init-from {path} is not a run folder (no config.json); give a folder made by "
            "train.py or `python -m mlx_gpt import`"
        )
    run.checkpoint("best")  # raises, saying what the folder has, if there is none
    return run


def latest_run(root: str | Path = DEFAULT_ROOT) -> RunFolder:
    """The most recently modified run folder under `root` that holds a checkpoint."""
    root = Path(root)
    runs = [RunFolder(p) for p in root.glob("*/") if (p / "config.json").is_file()]
    runs = [r for r in runs if r.has_checkpoint()]
    if not runs:
        raise UserError(f"no trained run under {root}/; run `python train.py` first")
    return max(runs, key=lambda r: r.metrics_file.stat().st_mtime if r.metrics_file.exists() else 0)
