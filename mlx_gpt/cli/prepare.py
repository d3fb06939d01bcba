"""`python -m mlx_gpt prepare SOURCE --out-dir DIR`: tokenize a corpus once, into shards
that `train.py --data DIR` reads in place."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer

from mlx_gpt.cli.common import say, user_errors, warnings_as_lines
from mlx_gpt.errors import UserError

HELP = """Tokenize a corpus once into shards of token ids, for `train.py --data DIR`.

SOURCE is a text file, a folder or a glob of .txt, .jsonl (a `text` field) and .parquet
(a `text` column) files, or a Hugging Face dataset streamed with `datasets`
(`pip install "mlx-gpt[data]"`), e.g. FineWeb-Edu as build-nanogpt uses it:

    python -m mlx_gpt prepare HuggingFaceFW/fineweb-edu --name sample-10BT --out-dir data/edu

Each document is led by GPT-2's <|endoftext|> token (none for a char vocabulary). The val
split is the first whole documents up to --val-tokens tokens or a tenth of the files'
bytes, whichever comes first; of a single text file, gpt.py's last 10 %. Ctrl-C or
kill -9, then the same command again, goes on after the last whole shard; --overwrite
starts over.
"""

PANEL = "Tokenizer"
TOKENIZER_HELP = (
    "char (one token per character), bpe (byte-level BPE learned on --tokenizer-sample) or "
    "gpt2 (GPT-2's 50,257 tokens, from --tokenizer-path or the hub's cache)."
)


@user_errors
def prepare_command(
    source: Annotated[str, typer.Argument(help="A text file, folder, glob or dataset name.")],
    out_dir: Annotated[str, typer.Option(help="Folder to write the shards to.")],
    tokenizer: Annotated[str, typer.Option(help=TOKENIZER_HELP, rich_help_panel=PANEL)] = "gpt2",
    tokenizer_path: Annotated[
        str | None,
        typer.Option(
            help="gpt2: a folder with tokenizer.json or vocab.json + merges.txt, or a hub "
            "name. bpe: an existing tokenizer.json (a run's) instead of learning one.",
            rich_help_panel=PANEL,
        ),
    ] = None,
    vocab_size: Annotated[
        int, typer.Option(help="Tokens of a new bpe, 256 to 65,535.", rich_help_panel=PANEL)
    ] = 50_257,
    tokenizer_sample: Annotated[
        int,
        typer.Option(
            help="Characters a new char or bpe vocabulary is drawn from.", rich_help_panel=PANEL
        ),
    ] = 10_000_000,
    shard_tokens: Annotated[int, typer.Option(help="Tokens per shard.")] = 100_000_000,
    val_tokens: Annotated[
        int,
        typer.Option(
            help="Tokens of the val split (whole documents, so a few more); a tenth of "
            "local files' bytes if that comes first."
        ),
    ] = 10_000_000,
    max_tokens: Annotated[
        int | None, typer.Option(help="Stop after this many tokens. [default: the whole corpus]")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Tokenizer threads. [default: every core]", show_default=False)
    ] = 0,
    name: Annotated[
        str | None, typer.Option(help="A dataset's configuration, e.g. sample-10BT.")
    ] = None,
    split: Annotated[str, typer.Option(help="A dataset's split.")] = "train",
    data_files: Annotated[
        list[str] | None, typer.Option(help="A dataset's data files (e.g. with SOURCE json).")
    ] = None,
    text_field: Annotated[
        str, typer.Option(help="The field or column that holds the text.")
    ] = "text",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Delete the prepare files already in --out-dir (shards, meta.json, "
            "progress.json, tokenizer) and start over; other files are left alone.",
        ),
    ] = False,
) -> None:
    from mlx_gpt.tokenizer import KINDS, MAX_VOCAB, MIN_BPE_VOCAB

    if tokenizer not in KINDS:
        raise UserError(f"--tokenizer must be one of {', '.join(KINDS)}, not {tokenizer!r}")
    if tokenizer == "bpe" and not MIN_BPE_VOCAB <= vocab_size <= MAX_VOCAB:
        raise UserError(f"--vocab-size must be between {MIN_BPE_VOCAB} and {MAX_VOCAB:,}")
    for flag, value in (
        ("--shard-tokens", shard_tokens),
        ("--val-tokens", val_tokens),
        ("--tokenizer-sample", tokenizer_sample),
        ("--max-tokens", max_tokens or 1),
    ):
        if value < 1:
            raise UserError(f"{flag} must be at least 1")  # fmt: skip
    if workers < 0:
        raise UserError("--workers must be >= 0 (0: every core)")
    # Hugging Face tokenizers encodes a batch on a Rayon pool, sized when first used.
    threads = str(workers or os.cpu_count() or 1)
    os.environ["RAYON_NUM_THREADS"] = os.environ["RAYON_RS_NUM_CPUS"] = threads

    from mlx_gpt.data.prepare import prepare_corpus
    from mlx_gpt.data.recipe import PrepareConfig
    from mlx_gpt.data.sources import open_source

    src = open_source(source, name=name, split=split, data_files=data_files, text_field=text_field)
    cfg = PrepareConfig(
        source, tokenizer, tokenizer_path, vocab_size, tokenizer_sample, shard_tokens,
        val_tokens, max_tokens, src.dataset,
    )  # fmt: skip
    start = time.perf_counter()
    with warnings_as_lines(), _progress_bar() as on_progress:
        meta, done_already = prepare_corpus(cfg, src, out_dir, on_progress, overwrite)
    if done_already:
        say(f"{out_dir} is prepared already (meta.json); train on it with --data {out_dir}")
        return
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    seconds = time.perf_counter() - start
    say(
        f"prepared {out_dir}: train {train['tokens']:,} tokens in {len(train['shards'])} "
        f"shard(s), val {val['tokens']:,} tokens, {meta['tokenizer']['kind']} tokenizer "
        f"({meta['tokenizer']['vocab_size']:,} tokens, {meta['dtype']}) | "
        f"{(train['tokens'] + val['tokens']) / seconds:,.0f} tok/s this session"
    )
    say(f"train on it: python train.py --data {out_dir}")


class _progress_bar:
    """Rich's bar on a terminal; elsewhere a plain line every 10 seconds."""

    def __enter__(self):
        from mlx_gpt.data.prepare import eta_seconds

        self.eta = eta_seconds
        self.last = time.perf_counter()  # the first line after 10 s
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("prepare"), BarColumn(), TextColumn("{task.fields[line]}"),
                TimeRemainingColumn(), transient=True,
            )  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task("prepare", total=None, line="")
        return self.report

    def report(self, p) -> None:
        rate = p.tokens / p.seconds if p.seconds else 0.0
        line = f"{p.documents:,} docs | {p.tokens:,} tokens | {rate:,.0f} tok/s | {p.shards} shards"
        if self.bar is not None:
            self.bar.update(self.task, completed=p.bytes_read, total=p.total_bytes, line=line)
        elif time.perf_counter() - self.last >= 10:
            self.last = time.perf_counter()
            eta = self.eta(p)
            say(line + (f" | eta {eta:,.0f} s" if eta is not None else ""))

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
