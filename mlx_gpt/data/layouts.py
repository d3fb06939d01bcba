"""A prepared corpus (`--data DIR`), read in place through memory maps, never loaded.

Three layouts, told apart by the files present:

    mlx-gpt        `python -m mlx_gpt prepare`: meta.json, tokenizer.json or vocab.json,
                   train_NNNNNN.bin and val_NNNNNN.bin (raw token ids, meta.json's dtype)
    nanogpt        nanoGPT's prepare.py: train.bin and val.bin (raw uint16, no header),
                   and meta.pkl for a char vocabulary; without it the ids are GPT-2's
    build-nanogpt  build-nanogpt's fineweb.py: *_train_NNNNNN.npy, *_val_NNNNNN.npy (uint16
                   GPT-2 ids, .npy files)

A corpus is recognised by its digest: the sha256 of our meta.json, or, for the others,
of each file's name, size and modification time, so that a start never reads gigabytes
to know whether a resume is on the same data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlx_gpt.data.recipe import prepare_command
from mlx_gpt.data.tokens import Splits, Tokens
from mlx_gpt.errors import UserError
from mlx_gpt.tokenizer import CHAR_FILE, HF_FILE, CharTokenizer, Tokenizer, load_tokenizer

META = "meta.json"
GPT2_VOCAB = 50_257  # the ids of nanoGPT's and build-nanogpt's GPT-2 corpora
LAYOUTS = (
    "a folder made by `python -m mlx_gpt prepare` (meta.json), by nanoGPT's prepare.py "
    "(train.bin and val.bin) or by build-nanogpt's fineweb.py (*_train_NNNNNN.npy and "
    "*_val_NNNNNN.npy)"
)
SCAN_CHUNK = 1 << 24  # tokens read at a time when a foreign corpus is checked


@dataclass
class Corpus:
    path: Path
    layout: str  # mlx-gpt, nanogpt or build-nanogpt
    splits: Splits
    digest: str
    tokenizer_kind: str
    tokenizer: Tokenizer | None  # None: GPT-2 ids with no tokenizer in the folder
    vocab_size: int
    max_id: int | None  # the largest id, if the folder records it (ours does)


def is_prepared(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_dir()


def layout_of(path: Path) -> str:
    if (path / META).is_file():
        return "mlx-gpt"
    if (path / "train.bin").is_file() and (path / "val.bin").is_file():
        return "nanogpt"
    if _npy_shards(path, "train") and _npy_shards(path, "val"):
        return "build-nanogpt"
    raise UserError(f"--data {path} holds no corpus this project reads; give {LAYOUTS}")


def tokenizer_kind(path: str | Path) -> tuple[str, int | None]:
    """The tokenizer a prepared folder's ids are in (char, bpe or gpt2) and its size if
    the folder says, read cheaply: what the settings need before the corpus is opened."""
    path = Path(path)
    layout = layout_of(path)
    if layout == "mlx-gpt":
        tokenizer = _read_meta(path)["tokenizer"]
        return tokenizer["kind"], tokenizer.get("vocab_size")
    if layout == "nanogpt" and (path / "meta.pkl").is_file():
        return "char", None
    return "gpt2", GPT2_VOCAB


def open_corpus(path: str | Path) -> Corpus:
    """The corpus in folder `path`, its shards memory-mapped; UserError if it is not one."""
    path = Path(path)
    layout = layout_of(path)
    if layout == "mlx-gpt":
        return _open_ours(path)
    if layout == "nanogpt":
        return _open_nanogpt(path)
    files = {s: _npy_shards(path, s) for s in ("train", "val")}
    splits = Splits(*(Tokens([_npy(f) for f in files[s]]) for s in ("train", "val")), None, None)
    digest = _files_digest(files["train"] + files["val"])
    return Corpus(path, layout, splits, digest, "gpt2", None, GPT2_VOCAB, None)


def scan_max_id(corpus: Corpus, on_progress: Callable[[int, int], None] | None = None) -> int:
    """The largest id in a corpus that does not record it: one pass, read in chunks
    through the file (not the memory map, whose pages would stay in this process)."""
    shards = corpus.splits.train.shards + corpus.splits.val.shards
    total, done, largest = sum(len(s) for s in shards), 0, 0
    for shard in shards:
        with open(shard.filename, "rb") as f:
            f.seek(shard.offset)
            left = len(shard)
            while left:
                chunk = np.fromfile(f, dtype=shard.dtype, count=min(left, SCAN_CHUNK))
                largest, left, done = (
                    max(largest, int(chunk.max())),
                    left - len(chunk),
                    done + len(chunk),
                )
                if on_progress:
                    on_progress(done, total)
    return largest


def _open_ours(path: Path) -> Corpus:
    meta = _read_meta(path)
    dtype = np.dtype(meta["dtype"])
    if (damaged := damaged_shard(path, meta)) is not None:
        raise UserError(
            f"{damaged} is missing or not the size meta.json gives; prepare the corpus "
            f"again: {prepare_command(meta['settings'], path)}"
        )
    shards = {
        split: [np.memmap(path / s["file"], dtype=dtype, mode="r")
                for s in meta["splits"][split]["shards"]]
        for split in ("train", "val")
    }  # fmt: skip
    splits = Splits(
        Tokens(shards["train"]), Tokens(shards["val"]),
        meta["splits"]["train"]["chars"], meta["splits"]["val"]["chars"],
    )  # fmt: skip
    tokenizer = load_tokenizer(path, meta["tokenizer"]["kind"])
    if tokenizer.digest() != meta["tokenizer"]["digest"]:
        raise UserError(f"{path}'s tokenizer is not the one its meta.json names; prepare again")
    digest = hashlib.sha256((path / META).read_bytes()).hexdigest()
    kind = meta["tokenizer"]["kind"]
    return Corpus(
        path, "mlx-gpt", splits, digest, kind, tokenizer, tokenizer.vocab_size, meta["max_id"]
    )


def damaged_shard(path: Path, meta: dict) -> Path | None:
    """The first shard of a prepared corpus that is missing or not the size meta.json
    gives (a copy cut short, a disk that filled); None if all are whole."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split in ("train", "val"):
        for shard in meta["splits"][split]["shards"]:
            file = path / shard["file"]
            if not file.is_file() or file.stat().st_size != shard["tokens"] * itemsize:
                return file
    return None


def _open_nanogpt(path: Path) -> Corpus:
    files = [path / "train.bin", path / "val.bin"]
    for file in files:
        if file.stat().st_size % 2:
            raise UserError(
                f"{file} has an odd number of bytes: it is not whole uint16 ids "
                f"(truncated?); run nanoGPT's prepare.py again"
            )
        if file.stat().st_size == 0:
            raise UserError(f"{file} is empty; run nanoGPT's prepare.py again")
    train, val = (Tokens([np.memmap(f, dtype=np.uint16, mode="r")]) for f in files)
    tokenizer, kind, vocab = None, "gpt2", GPT2_VOCAB
    if (path / "meta.pkl").is_file():
        from mlx_gpt.weights.nanogpt import read_meta

        tokenizer = CharTokenizer(read_meta(path / "meta.pkl", flag="--data"))
        files.append(path / "meta.pkl")
        kind, vocab = "char", tokenizer.vocab_size
    splits = Splits(train, val, None, None)
    return Corpus(path, "nanogpt", splits, _files_digest(files), kind, tokenizer, vocab, None)


AGAIN = "run the prepare command again with --overwrite"  # what mends a damaged folder


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / META).read_text())
        meta["splits"]["train"]["shards"], meta["tokenizer"]["kind"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path / META} is damaged ({e}); {AGAIN}") from None
    if not (path / HF_FILE).is_file() and not (path / CHAR_FILE).is_file():
        raise UserError(f"{path} has no tokenizer ({HF_FILE} or {CHAR_FILE}); {AGAIN}")
    return meta


def _npy_shards(path: Path, split: str) -> list[Path]:
    pattern = re.compile(rf".*_{split}_\d+\.npy$")
    return sorted(p for p in path.glob(f"*_{split}_*.npy") if pattern.match(p.name))


def _npy(file: Path) -> np.ndarray:
    try:
        shard = np.load(file, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"{file} is not a whole .npy file ({e}); write it again") from None
    if shard.ndim != 1 or shard.dtype not in (np.uint16, np.uint32, np.int32):
        raise UserError(f"{file} holds {shard.dtype} of shape {shard.shape}, not token ids")
    return shard


def _files_digest(files: list[Path]) -> str:
    """Files recognised by name, size and modification time: cheap, and changed by any
    rewrite that matters."""
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()
