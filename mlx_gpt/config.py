"""Training configuration: one typed dataclass, the presets, and how they are combined.

Precedence, lowest first: the preset, a `--config` JSON file, flags on the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mlx_gpt.errors import UserError
from mlx_gpt.model import GPTConfig

MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")


@dataclass
class TrainConfig:
    preset: str = "lecture"
    data: str | None = None  # None: the tiny Shakespeare copy shipped in the package
    out_dir: str | None = None  # None: out/<preset>
    # model (see GPTConfig)
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    # optimization
    max_iters: int = 5000
    batch_size: int = 64
    learning_rate: float = 3e-4
    warmup_iters: int = 0
    lr_decay_iters: int = 0  # 0: constant learning rate after warm-up
    min_lr: float = 3e-4  # where the cosine decay ends
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.01
    decay_matrices_only: bool = False  # nanoGPT: no decay on biases and LayerNorm
    grad_clip: float = 0.0  # 0: off
    # evaluation & checkpoints
    eval_interval: int = 500
    eval_iters: int = 200
    log_interval: int = 10
    early_stop: int = 0  # stop after N evaluations without a new best val loss; 0: off
    # runtime
    seed: int = 1337

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict, ignoring keys this version does not know."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, **{k: getattr(self, k) for k in MODEL_FIELDS})

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir or f"out/{self.preset}")

    def validate(self) -> None:
        """Raise UserError, naming the flag, for any nonsense value."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(msg)

        for name in ("block_size", "n_layer", "n_head", "n_embd", "max_iters", "batch_size"):
            need(getattr(self, name) >= 1, f"--{flag(name)} must be a positive integer")
        for name in ("eval_interval", "eval_iters", "log_interval"):
            need(getattr(self, name) >= 1, f"--{flag(name)} must be a positive integer")
        need(
            self.n_embd % self.n_head == 0,
            f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})",
        )
        need(0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}")
        for name in ("learning_rate", "min_lr"):
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"--{flag(name)} must be positive")
        need(self.weight_decay >= 0, "--weight-decay must be >= 0")
        need(self.grad_clip >= 0, "--grad-clip must be >= 0 (0 turns clipping off)")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")
        for name in ("warmup_iters", "lr_decay_iters", "early_stop"):
            need(getattr(self, name) >= 0, f"--{flag(name)} must be >= 0")
        need(
            self.lr_decay_iters == 0 or self.lr_decay_iters > self.warmup_iters,
            "--lr-decay-iters must be larger than --warmup-iters (or 0 for a constant rate)",
        )


def flag(field_name: str) -> str:
    return field_name.replace("_", "-")


# gpt.py, exactly (the TrainConfig defaults).
_LECTURE: dict[str, Any] = {}

# nanoGPT's config/train_shakespeare_char.py optimizer recipe on the lecture's model.
_NANOGPT: dict[str, Any] = dict(
    learning_rate=1e-3,
    warmup_iters=100,
    lr_decay_iters=5000,
    min_lr=1e-4,
    beta2=0.99,
    weight_decay=0.1,
    decay_matrices_only=True,
    grad_clip=1.0,
    eval_interval=250,
)

PRESETS: dict[str, dict[str, Any]] = {
    "lecture": _LECTURE,
    "nanogpt": _NANOGPT,
    # nanoGPT's README recipe for a MacBook CPU (val ~1.88 after 2000 steps).
    "small": {
        **_NANOGPT,
        "n_layer": 4,
        "n_head": 4,
        "n_embd": 128,
        "block_size": 64,
        "batch_size": 12,
        "dropout": 0.0,
        "max_iters": 2000,
        "lr_decay_iters": 2000,
        "eval_iters": 20,
    },
    # Seconds, not minutes: smoke tests and trying the tools. Dropout stays on so that
    # resume is tested with randomness in the step.
    "tiny": {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 32,
        "batch_size": 8,
        "dropout": 0.1,
        "learning_rate": 1e-3,
        "min_lr": 1e-3,
        "max_iters": 100,
        "eval_interval": 25,
        "eval_iters": 5,
        "log_interval": 5,
    },
}


def preset_config(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], "preset": name})


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A `--config` file: a JSON object of TrainConfig fields, or a run's config.json."""
    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise UserError(f"config file {path} must hold a JSON object")
    d = d.get("train", d)  # a run folder's config.json keeps the fields under "train"
    unknown = sorted(set(d) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise UserError(f"config file {path} has unknown keys: {', '.join(unknown)}")
    return d


def resolve(
    preset: str | None,
    config_file: str | None,
    overrides: dict[str, Any],
    base: TrainConfig | None = None,
) -> TrainConfig:
    """The preset (or, resuming, the run's saved config), then the config file, then
    command-line flags; validated."""
    from_file = read_config_file(config_file) if config_file else {}
    if base is None:
        name = preset or from_file.get("preset") or "lecture"
        base = preset_config(name)
    else:
        name = base.preset
    cfg = TrainConfig.from_dict({**base.to_dict(), **from_file, **overrides, "preset": name})
    cfg.validate()
    return cfg
