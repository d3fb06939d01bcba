"""The settings of one run: a preset, a `--config` file, flags, and the run it resumes or
starts from, resolved into one checked TrainConfig.

Precedence, lowest first:

    new run      the preset, then what --architecture sets (config.ARCHITECTURES),
                 then --config, then flags
    --resume     the run folder's saved settings (its preset included), then --config,
                 then flags; training/start.py then refuses what a resume may not change
    --init-from  as a new run, but the model and tokenizer settings that neither
                 --config nor a flag gives are the source run's

This module reads run folders and files and writes nothing; config.py only declares.
"""

from __future__ import annotations

import json
import typing
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from mlx_gpt.config import (
    ARCHITECTURES,
    DEFAULT_PRESET,
    INHERITED,
    TrainConfig,
    default_run_dir,
)
from mlx_gpt.data.layouts import is_prepared, tokenizer_kind
from mlx_gpt.errors import UserError
from mlx_gpt.presets import preset_config
from mlx_gpt.runs.folder import RunFolder, source_run


def resolve(
    preset: str | None,
    config_file: str | None,
    overrides: dict[str, Any],
    *,
    resume: bool = False,
) -> TrainConfig:
    """The run's settings, validated: the one place where they are combined."""
    from_file = read_config_file(config_file) if config_file else {}
    if resume:
        run = RunFolder(overrides.get("out_dir") or default_run_dir(preset or DEFAULT_PRESET))
        if not run.config_file.is_file():
            raise UserError(f"no run to resume in {run.path}; drop --resume to start a new run")
        base = run.train_config()
        name = base.preset
        overrides = {"out_dir": str(run.path), **overrides}
    else:
        name = preset or from_file.get("preset") or DEFAULT_PRESET
        base = preset_config(name)
    # --architecture brings the parts of its block, which --config and flags override.
    architecture = {**from_file, **overrides}.get("architecture")
    parts = ARCHITECTURES.get(architecture, {}) if not resume else {}
    settings = {**base.to_dict(), **parts, **from_file, **overrides, "preset": name}
    if settings.get("init_from") and not resume:
        # A run started from another takes its model and tokenizer unless told otherwise.
        given = set(from_file) | set(overrides)
        saved = source_run(settings["init_from"]).read_config()["train"]
        settings.update({k: saved[k] for k in INHERITED if k in saved and k not in given})
    elif name == "finetune" and not resume:
        raise UserError("the finetune preset starts from a run's weights: add --init-from RUN")
    given = set(from_file) | set(overrides)
    if is_prepared(settings.get("data")):
        _take_corpus_tokenizer(settings, given)
    # --micro-batch sets --grad-accum (training/start.py), so a flag may give one of them.
    if overrides.get("micro_batch") is not None and "grad_accum" in overrides:
        raise UserError("give --grad-accum or --micro-batch, not both: one follows from the other")
    if "grad_accum" in overrides:
        settings["micro_batch"] = None  # a resumed run's --micro-batch gives way to it
    cfg = TrainConfig.from_dict(settings)
    if cfg.dtype == "auto":  # measured once per machine and model shape (machine/speed.py)
        cfg = replace(cfg, dtype=auto_dtype(cfg.block_size, cfg.n_embd))
    cfg.validate()
    return cfg


def auto_dtype(block_size: int, n_embd: int) -> str:
    """--dtype auto: the compute dtype a matmul of the model's shapes runs faster in on
    this machine's device (bfloat16 only when clearly faster)."""
    from mlx_gpt.machine.speed import choose_dtype, model_shape

    return choose_dtype(model_shape(block_size, n_embd)).dtype


def _take_corpus_tokenizer(settings: dict[str, Any], given: set[str]) -> None:
    """A prepared corpus (--data DIR) brings its tokenizer, as --init-from brings its
    model: --tokenizer, if given, must name the same kind."""
    kind, size = tokenizer_kind(settings["data"])
    if "tokenizer" in given and settings["tokenizer"] != kind:
        raise UserError(
            f"--tokenizer {settings['tokenizer']} differs from --data {settings['data']}'s "
            f"{kind}; a prepared corpus brings its tokenizer, so drop --tokenizer"
        )
    settings["tokenizer"] = kind
    if kind == "bpe" and size:  # the size it has, not the one a new BPE would get
        settings["vocab_size"] = size


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
    """A dataclass field's type, and whether it may be None: `float | None` gives
    (float, True). The command-line flags and the --config checks both read it here."""
    hint = typing.get_type_hints(cls)[name]
    kinds = [a for a in typing.get_args(hint) if a is not type(None)]
    return (kinds[0] if kinds else hint), type(None) in typing.get_args(hint)


def _is_a(value: Any, kind: type) -> bool:
    """Whether a JSON value fits a field of type `kind`. An int is a float, but a bool
    is not an int (JSON's true is no number of layers)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)
