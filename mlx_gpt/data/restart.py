"""A prepare's folder between runs: a stopped prepare to go on with, or a prepare's files
to delete so that the next one starts over (--overwrite, or a fresh prepare that failed).

A prepare owns meta.json, progress.json, its tokenizer's files and its shards; anything
else in the folder is the user's and is never deleted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from mlx_gpt.data.layouts import AGAIN, META
from mlx_gpt.data.tokenizing import TOKENIZER_FILES
from mlx_gpt.errors import UserError

PROGRESS = "progress.json"
SHARD_NAME = re.compile(r"(train|val)_\d{6}\.bin(\.tmp)?")


def delete_prepare(out: Path) -> None:
    """The files a prepare writes in out (meta.json, progress.json, the tokenizer, the
    shards whole or half-written); anything else there is left alone."""
    if not out.is_dir():
        return
    for f in out.iterdir():
        ours = f.name in (META, PROGRESS, *TOKENIZER_FILES) or SHARD_NAME.fullmatch(f.name)
        if ours and f.is_file():
            f.unlink()


def read_progress(out: Path, settings: dict, overwrite: bool) -> dict | None:
    """A stopped prepare's progress, if out holds one asked the same; else out must be
    new or empty (or hold no prepare's file, with --overwrite, which deleted them)."""
    if (out / PROGRESS).is_file():
        progress = read_json(out / PROGRESS)
        if progress.get("settings") != settings:
            raise UserError(
                f"{out} holds a prepare with other settings; run the same command to "
                f"finish it, add --overwrite to start over, or choose another --out-dir"
            )
        for split in progress["splits"].values():
            for shard in split["shards"]:
                if not (out / shard["file"]).is_file():
                    raise UserError(f"{out / shard['file']} is gone; start over with --overwrite")
        return progress
    # A prepare killed before its first progress.json leaves at most its tokenizer.
    if not overwrite and out.exists() and any(f.name not in TOKENIZER_FILES for f in out.iterdir()):
        raise UserError(
            f"{out} is not empty and holds no prepare to finish; choose another --out-dir, "
            f"or prepare beside its files with --overwrite"
        )
    return None


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is damaged ({e}); {AGAIN}") from None
