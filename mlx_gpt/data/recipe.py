"""What a prepared corpus was asked for (PrepareConfig, kept in meta.json and
progress.json), and the command that prepares it again."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields


@dataclass
class PrepareConfig:
    """What `prepare` was asked for: a resumed prepare must be asked the same."""

    source: str
    tokenizer: str = "gpt2"
    tokenizer_path: str | None = None
    vocab_size: int = 50_257
    tokenizer_sample: int = 10_000_000
    shard_tokens: int = 100_000_000
    val_tokens: int = 10_000_000
    max_tokens: int | None = None
    dataset: dict | None = field(default=None)


def prepare_command(settings: dict, out_dir) -> str:
    """The `prepare` command that writes out_dir afresh with these settings: the ones
    that differ from the defaults as flags, and --overwrite. A dataset's own options
    (--name, --split, ...) are not kept in the settings, so the line says to add them."""
    words = ["python", "-m", "mlx_gpt", "prepare", str(settings["source"]), "--out-dir",
             str(out_dir)]  # fmt: skip
    for f in fields(PrepareConfig):
        if f.name in ("source", "dataset") or f.name not in settings:
            continue
        if settings[f.name] != f.default and settings[f.name] is not None:
            words += [f"--{f.name.replace('_', '-')}", str(settings[f.name])]
    command = shlex.join([*words, "--overwrite"])
    if settings.get("dataset"):
        command += " (with the dataset options you gave it)"
    return command
