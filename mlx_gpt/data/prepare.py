"""`python -m mlx_gpt prepare SOURCE --out-dir DIR`: a corpus tokenized once into shards.

The pipeline reads documents (sources.py) in batches, tokenizes each batch in parallel
(Hugging Face tokenizers' batch encoding, on its own threads), prepends the end-of-text
token to every document as build-nanogpt does, and appends the ids to the shards of the
split they belong to (shards.py). Memory holds one batch and nothing more, whatever the
corpus's size.

    val    the first documents, until --val-tokens ids or a tenth of a local source's
           bytes (whole documents, so that its character count is exact); for a
           single text file, gpt.py's last 10 %
    train  the rest

After each shard is renamed, progress.json records how far the source has been read:
the same command again, after Ctrl-C or kill -9, goes on from there. meta.json is
written last; it marks the corpus whole and is what a training run reads (layouts.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mlx_gpt.data.layouts import META, damaged_shard
from mlx_gpt.data.recipe import PrepareConfig, prepare_command
from mlx_gpt.data.restart import PROGRESS, delete_prepare, read_json, read_progress
from mlx_gpt.data.shards import ShardWriter, write_json
from mlx_gpt.data.sources import Source
from mlx_gpt.data.tokenizing import Encoder, make_tokenizer
from mlx_gpt.errors import UserError

BATCH_BYTES = 4 << 20  # text tokenized at a time: large enough to keep every thread busy
SPLITS = ("val", "train")  # in the order the stream fills them
VAL_SHARE = 10  # a local source's val is at most a tenth of its bytes


@dataclass
class Progress:
    """A progress report: what the bar shows."""

    documents: int
    tokens: int
    shards: int
    bytes_read: int
    total_bytes: int | None
    seconds: float


def prepare_corpus(
    cfg: PrepareConfig,
    source: Source,
    out_dir: str | Path,
    on_progress: Callable[[Progress], None] | None = None,
    overwrite: bool = False,
) -> tuple[dict, bool]:
    """Tokenize `source` into out_dir; returns meta.json's contents, and whether the
    folder was complete already (nothing done). With `overwrite`, a prepare's files
    already in out_dir are deleted first, whole or not.

    A prepare that starts afresh and fails with a UserError (a corpus too small to
    split, say) deletes what it wrote, so that the next command starts afresh too."""
    out = Path(out_dir)
    if overwrite:
        delete_prepare(out)
    if (out / META).is_file():
        meta = read_json(out / META)
        if (damaged := damaged_shard(out, meta)) is not None:
            raise UserError(
                f"{damaged} is missing or not the size meta.json gives; prepare the corpus "
                f"again: {prepare_command(meta['settings'], out)}"
            )
        return meta, True
    settings = asdict(cfg)
    progress = read_progress(out, settings, overwrite)
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _prepare(cfg, source, out, progress, on_progress), False
    except UserError:
        if progress is None:  # this call started it: leave the folder as it found it
            delete_prepare(out)
            if not existed:
                out.rmdir()
        raise


def _prepare(
    cfg: PrepareConfig,
    source: Source,
    out: Path,
    progress: dict | None,
    on_progress: Callable[[Progress], None] | None,
) -> dict:
    settings = asdict(cfg)
    tokenizer = make_tokenizer(cfg, source, out, resumed=progress is not None)
    encoder = Encoder(tokenizer, separate=not source.single_text)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    if progress is None:
        progress = {"settings": settings, "split": "val", "document": 0, "offset": 0,
                    "splits": {s: _empty_split() for s in SPLITS}}  # fmt: skip
        write_json(out / PROGRESS, progress, indent=None)
    stats = progress["splits"]
    writers = {s: ShardWriter(out, s, cfg.shard_tokens, dtype, stats[s]["shards"]) for s in SPLITS}
    split, first, offset = progress["split"], progress["document"], progress["offset"]
    clock, read = time.perf_counter(), 0

    def checkpoint(document: int, offset: int) -> None:
        for s in SPLITS:
            stats[s]["shards"] = writers[s].shards
        progress.update(split=split, document=document, offset=offset)
        write_json(out / PROGRESS, progress, indent=None)

    try:
        for index, text, size, ids in _encoded(source, encoder, first):
            total = sum(writers[s].written for s in SPLITS)
            if offset == 0:  # a document's first ids: decide its split, count it
                if cfg.max_tokens is not None and total >= cfg.max_tokens:
                    break
                full = _val_is_full(source, cfg, index, writers["val"], stats["val"]["bytes"])
                if split == "val" and full:
                    writers["val"].finish()
                    split = "train"
                    checkpoint(index, 0)
                _count(stats[split], text, size)
            read += size if offset == 0 else 0
            rest = ids[offset:]
            writers[split].add(rest, lambda taken, i=index, o=offset: checkpoint(i, o + taken))
            offset = 0
            if on_progress:
                done = sum(len(writers[s].shards) for s in SPLITS)
                on_progress(Progress(
                    sum(stats[s]["documents"] for s in SPLITS), total + len(rest), done,
                    read, source.total_bytes, time.perf_counter() - clock,
                ))  # fmt: skip
        for s in SPLITS:
            writers[s].finish()
    except BaseException:
        for s in SPLITS:
            writers[s].discard()  # the shard being filled; the whole ones are recorded
        raise
    for s in SPLITS:
        stats[s]["shards"] = writers[s].shards
    meta = _meta(cfg, tokenizer, dtype, stats, writers)
    write_json(out / META, meta)
    (out / PROGRESS).unlink(missing_ok=True)
    return meta


def _encoded(
    source: Source, encoder: Encoder, first: int
) -> Iterator[tuple[int, str, int, np.ndarray]]:
    """(index, text, source bytes, ids) of every document from the first-th, encoded a
    batch at a time."""
    batch: list[tuple[str, int]] = []
    size, index = 0, first
    for text, nbytes in source.documents(skip=first):
        batch.append((text, nbytes))
        size += len(text)
        if size >= BATCH_BYTES:
            yield from _encode_batch(batch, encoder, index)
            index, batch, size = index + len(batch), [], 0
    yield from _encode_batch(batch, encoder, index)


def _encode_batch(batch, encoder: Encoder, index: int):
    for i, ((text, nbytes), ids) in enumerate(
        zip(batch, encoder.encode([t for t, _ in batch]), strict=True)
    ):
        yield index + i, text, nbytes, ids


def _val_is_full(
    source: Source, cfg: PrepareConfig, index: int, val: ShardWriter, val_bytes: int
) -> bool:
    """Whether val has its documents: --val-tokens tokens, or a tenth of a local
    source's bytes, whichever comes first (so that a small folder keeps nine tenths for
    train, as a single text file does)."""
    if source.single_text:
        return index >= 1  # gpt.py's val is the one document before train
    tenth = source.total_bytes is not None and val_bytes * VAL_SHARE >= source.total_bytes
    return val.written >= cfg.val_tokens or tenth


def _empty_split() -> dict:
    return {"tokens": 0, "documents": 0, "chars": 0, "bytes": 0, "shards": []}


def _count(split: dict, text: str, size: int) -> None:
    split["documents"] += 1
    split["chars"] += len(text)
    split["bytes"] += size


def _meta(cfg: PrepareConfig, tokenizer, dtype, stats: dict, writers: dict) -> dict:
    for s in SPLITS:
        stats[s]["tokens"] = writers[s].tokens
    val = stats["val"]
    if not stats["train"]["tokens"]:
        if val["documents"] < 2:
            raise UserError(
                "the corpus is one document, and val takes whole documents, so nothing is "
                "left to train on; give it more documents, or prepare one text file "
                "(gpt.py's 90/10 cut)"
            )
        raise UserError(
            f"the train split is empty: val took all {val['documents']:,} documents "
            f"({val['tokens']:,} tokens); try --val-tokens {max(1, val['tokens'] // 10)}"
        )
    if not val["tokens"]:
        raise UserError("the val split is empty: the corpus is too small; give a larger one")
    return {
        "format": "mlx-gpt prepared corpus",
        "version": 1,
        "source": cfg.source,
        "settings": asdict(cfg),
        "tokenizer": {
            "kind": tokenizer.kind,
            "vocab_size": tokenizer.vocab_size,
            "digest": tokenizer.digest(),
        },  # fmt: skip
        "dtype": np.dtype(dtype).name,
        "max_id": max(writers[s].max_id for s in SPLITS),
        "splits": {s: stats[s] for s in ("train", "val")},
    }


def eta_seconds(p: Progress) -> float | None:
    """Seconds still to go, from the share of the source's bytes read."""
    if not p.total_bytes or not p.bytes_read or not p.seconds:
        return None
    return max(p.seconds * (p.total_bytes / p.bytes_read - 1), 0.0)
