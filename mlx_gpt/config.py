"""Training configuration: one typed dataclass, the presets, and how they are combined.

Precedence, lowest first: the preset, a `--config` JSON file, flags on the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mlx_gpt.errors import UserError
from mlx_gpt.model import GPTConfig

MODEL_FIELDS = ("block_size", "n_layer", "n_head", "n_embd", "dropout")

# The panels of `train.py --help`.
DATA, MODEL, OPTIM, EVAL, RUNTIME = (
    "Data",
    "Model",
    "Optimization",
    "Evaluation & checkpoints",
    "Runtime",
)


def setting(default: Any, help: str, panel: str, flags: str | None = None) -> Any:
    """A TrainConfig field with its command-line help and --help panel beside it; the
    flag is --the-field-name unless `flags` names it (e.g. "--on/--off")."""
    return field(default=default, metadata={"help": help, "panel": panel, "flags": flags})


@dataclass
class TrainConfig:
    """Every setting of a training run: one field each, a flag each (`train.py --help`).

    The defaults are gpt.py's (the lecture preset)."""

    preset: str = setting("lecture", "lecture (gpt.py), nanogpt, small or tiny.", RUNTIME)
    data: str | None = setting(
        None, "UTF-8 text file to train on. [default: the bundled tiny Shakespeare]", DATA
    )
    out_dir: str | None = setting(None, "Run folder. [default: out/PRESET]", RUNTIME)
    # model (see GPTConfig)
    block_size: int = setting(256, "Context length in characters.", MODEL)
    n_layer: int = setting(6, "Transformer blocks.", MODEL)
    n_head: int = setting(6, "Attention heads per block.", MODEL)
    n_embd: int = setting(384, "Embedding width (a multiple of --n-head).", MODEL)
    dropout: float = setting(0.2, "Dropout probability in [0, 1).", MODEL)
    # optimization
    max_iters: int = setting(5000, "Optimizer steps in all.", OPTIM)
    batch_size: int = setting(64, "Sequences per step.", OPTIM)
    learning_rate: float = setting(3e-4, "Peak learning rate.", OPTIM)
    warmup_iters: int = setting(0, "Linear warm-up steps.", OPTIM)
    lr_decay_iters: int = setting(
        0, "Step where the cosine decay reaches --min-lr; 0 keeps the rate constant.", OPTIM
    )
    min_lr: float = setting(3e-4, "Learning rate at the end of decay.", OPTIM)
    beta1: float = setting(0.9, "AdamW beta1.", OPTIM)
    beta2: float = setting(0.999, "AdamW beta2.", OPTIM)
    weight_decay: float = setting(0.01, "AdamW weight decay.", OPTIM)
    decay_matrices_only: bool = setting(
        False,
        "Decay only 2-D weights (nanoGPT) or every parameter (gpt.py).",
        OPTIM,
        flags="--decay-matrices-only/--decay-all",
    )
    grad_clip: float = setting(0.0, "Clip the gradient norm to this; 0 turns it off.", OPTIM)
    # evaluation & checkpoints
    eval_interval: int = setting(500, "Evaluate and checkpoint every N steps.", EVAL)
    eval_iters: int = setting(200, "Batches per split per evaluation.", EVAL)
    log_interval: int = setting(10, "Log a metrics record every N steps.", EVAL)
    early_stop: int = setting(
        0, "Stop after N evaluations without a new best val loss; 0: never.", EVAL
    )
    save_every: float = setting(
        10.0,
        "Also save latest/ every N minutes between evaluations (fractions allowed); "
        "0: at evaluations only.",
        EVAL,
    )
    # runtime
    seed: int = setting(1337, "Random seed.", RUNTIME)
    max_memory: float | None = setting(
        None,
        "Memory budget in GB: a first step that uses more stops the run, with a batch "
        "size that fits. [default: 80% of RAM; on a Mac, of what Metal recommends]",
        RUNTIME,
    )

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
        for name in ("warmup_iters", "lr_decay_iters", "early_stop", "save_every"):
            need(getattr(self, name) >= 0, f"--{flag(name)} must be >= 0")
        need(
            self.max_memory is None or (math.isfinite(self.max_memory) and self.max_memory > 0),
            "--max-memory must be a positive number of GB",
        )
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
    for key, value in d.items():
        kind, optional = field_type(TrainConfig, key)
        if not ((value is None and optional) or _is_a(value, kind)):
            expected = kind.__name__ + (" or null" if optional else "")
            raise UserError(
                f"config file {path}: {key} must be {expected}, not {json.dumps(value)}"
            )
    return d


def field_type(cls: type, name: str) -> tuple[type, bool]:
    """A dataclass field's type, and whether it may be None: `float | None` ->
    (float, True). The command-line flags and the --config checks both read it here."""
    hint = typing.get_type_hints(cls)[name]
    kinds = [a for a in typing.get_args(hint) if a is not type(None)]
    return (kinds[0] if kinds else hint), type(None) in typing.get_args(hint)


def _is_a(value: Any, kind: type) -> bool:
    """Whether a JSON value fits a field of type `kind`: an int is a float; a bool is
    not an int."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


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
