"""How a run starts: new, resumed (--resume) or fine-tuned (--init-from).

nanoGPT's train.py makes the same three-way choice in its `init_from` block. Here it is
`prepare`, which reads and checks everything a run needs, builds its model and
optimizer, and writes nothing: the loop (loop.py) is the only writer, so a run refused
here leaves every folder as it was.

    new          the tokenizer is made from the text and the weights from the seed
    --resume     the folder's tokenizer and model, and latest/'s weights, optimizer
                 state, step and random generators, so the run goes on as if unbroken
    --init-from  another run's tokenizer, model and best/ weights, with a new
                 optimizer at step 0 (fine-tuning); that run is only read

Resuming and fine-tuning are one act, `_inherit`: take the model and the tokenizer from
a run folder, check the settings they fix, and let a few differ (config.MAY_CHANGE_*).

The data is a text file, or a prepared folder memory-mapped (corpus.py). With several
ranks, every rank reads its own copy of it (they must be the same), and rank 0 alone
reads the run folders and sends the others what it found, in the same order of
collectives and random draws as one process.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from mlx_gpt.config import (
    FIXED_ON_RESUME,
    INHERITED,
    MAY_CHANGE_ON_INIT_FROM,
    MAY_CHANGE_ON_RESUME,
    MODEL_FIELDS,
    TrainConfig,
    first_difference,
    flag,
)
from mlx_gpt.data.layouts import Corpus
from mlx_gpt.data.text import split_text, text_digest
from mlx_gpt.data.tokens import Splits
from mlx_gpt.distributed.ranks import Ranks
from mlx_gpt.errors import UserError
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.runs import checkpoint
from mlx_gpt.runs.folder import RunFolder, source_run
from mlx_gpt.tokenizer import Tokenizer, build_tokenizer, tokenizer_from_json, tokenizer_to_json
from mlx_gpt.training import guards, micro
from mlx_gpt.training.corpus import corpus_gpt2_tokenizer, corpus_splits, read_data
from mlx_gpt.training.judging import read_hellaswag
from mlx_gpt.training.optimizer import AdamW, MuonAdamW, make_optimizer


@dataclass
class Start:
    """Everything a run needs, checked and loaded; the loop writes it to the run folder."""

    cfg: TrainConfig
    run: RunFolder
    ranks: Ranks
    resumed: bool
    data_sha256: str  # the training data's, recorded so that a resume can check it
    tokenizer: Tokenizer | None  # None: GPT-2 ids from a folder with no tokenizer
    splits: Splits
    tokens_key: dict[str, str]  # what the splits were tokenized from (the cache's key)
    tokens_cached: bool  # the splits are on disk already: the token cache, or --data DIR
    model: GPT
    optimizer: AdamW | MuonAdamW
    data_rng: np.random.Generator  # draws the training batches
    state: dict[str, Any]  # step, tokens, best_val_loss, best_step, evals_since_best, ...
    scanned: dict | None = None  # a foreign corpus's largest id, for the run folder's cache
    micro_batch: micro.MicroBatch | None = None  # what --micro-batch auto chose
    hellaswag: list | None = None  # --hellaswag's examples, read and checked


@dataclass
class _Found:
    """What rank 0 read from the run folders, before any weights exist."""

    tokenizer: Tokenizer | None
    model_config: GPTConfig
    splits: Splits
    tokens_cached: bool = False
    scanned: dict | None = None
    resume_from: Path | None = None  # latest/ of the run to continue
    weights_from: Path | None = None  # best/ of the run to fine-tune


def prepare(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    data_changed: bool = False,
    ranks: Ranks | None = None,
    on_scan: Callable[[int, int], None] | None = None,
) -> Start:
    """Check and load everything the run needs; raise UserError before anything is written.
    on_scan(done, total) reports the one pass that checks a foreign corpus's ids."""
    ranks = ranks or Ranks()
    cfg = micro.with_micro_batch(cfg, ranks)
    run = RunFolder(cfg.run_dir)
    data, digest = read_data(cfg.data, ranks, cfg.data_chars)
    found = ranks.check(
        _read_folders, cfg, run, data, digest, resume, data_changed, on_scan, main_only=True
    )
    found = _share_found(found, data, cfg, ranks)

    # The random draws come in this order on every start: the weights, then the batches.
    mx.random.seed(cfg.seed)
    model = GPT(found.model_config)
    if found.weights_from:
        checkpoint.load_source_weights(found.weights_from, model)
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    data_rng = np.random.default_rng(cfg.seed)
    state: dict[str, Any] = dict(
        step=0, tokens=0, best_val_loss=math.inf, best_step=-1, evals_since_best=0, elapsed_s=0.0
    )
    keys = checkpoint.restore(found.resume_from, model, optimizer, data_rng, state)
    ranks.share_state(model, optimizer, data_rng, state, keys, cfg.seed)
    if state["step"] >= cfg.max_iters:
        raise UserError(
            f"the run in {run.path} is already at step {state['step']}; "
            f"pass a --max-iters above it to train further"
        )
    chosen = None
    if cfg.micro_batch == "auto":  # trial steps, undone: the weights are as restored
        chosen = micro.choose(model, optimizer, cfg, ranks, found.splits)
        cfg = replace(cfg, grad_accum=chosen.grad_accum)
    examples = read_hellaswag(cfg, found.tokenizer)
    tokenizer_digest = found.tokenizer.digest() if found.tokenizer else ""
    tokens_key = {"data_sha256": digest, "tokenizer": tokenizer_digest}
    return Start(
        cfg, run, ranks, resume, digest, found.tokenizer, found.splits, tokens_key,
        found.tokens_cached, model, optimizer, data_rng, state, found.scanned, chosen, examples,
    )  # fmt: skip


def _read_folders(
    cfg: TrainConfig,
    run: RunFolder,
    data: str | Corpus,
    digest: str,
    resume: bool,
    data_changed: bool,
    on_scan=None,
) -> _Found:
    """Rank 0 reads the run folder (and the source run) and tokenizes the text."""
    if resume:
        if not run.has_checkpoint():
            raise UserError(
                f"no checkpoint to resume in {run.path}; drop --resume to start a new run"
            )
        if source := run.read_config().get("source"):
            raise UserError(
                f"{run.path} holds imported weights ({source}), not a run to resume; "
                f"fine-tune them with --init-from {run.path} --out-dir NEW"
            )
        fix = f"drop it to resume {run.path}, or pick another --out-dir"
        model_config, tokenizer = _inherit(cfg, run, MAY_CHANGE_ON_RESUME, "the checkpoint's", fix)
        if found := first_difference(cfg, run.train_config(), FIXED_ON_RESUME):
            name, mine, theirs = found
            raise UserError(
                f"--{flag(name)} {mine} differs from the checkpoint's {theirs}, whose state "
                f"it saved; {fix}"
            )
        guards.check_same_data(run.read_config().get("data_sha256"), digest, data_changed)
        unfit = "the data does not fit this run's vocabulary"
        found = _splits(data, tokenizer, model_config, cfg, run, on_scan, unfit)
        found.resume_from = run.checkpoint("latest")
        return found

    run.check_new("pass --resume to continue it or choose another --out-dir")
    if cfg.init_from:
        source = source_run(cfg.init_from)
        fix = "--init-from keeps the source's model and tokenizer (only --block-size may shrink)"
        whose = f"{source.path}'s"
        model_config, tokenizer = _inherit(cfg, source, MAY_CHANGE_ON_INIT_FROM, whose, fix)
        unfit = f"--data does not fit {source.path}'s vocabulary"
        found = _splits(data, tokenizer, model_config, cfg, run, on_scan, unfit)
        found.weights_from = source.checkpoint("best")
        return found

    if isinstance(data, Corpus):
        tokenizer = data.tokenizer or corpus_gpt2_tokenizer(cfg.tokenizer_path)
        return _splits(data, tokenizer, cfg.model_config(data.vocab_size), cfg, run, on_scan)
    kind, size, path = cfg.tokenizer, cfg.vocab_size, cfg.tokenizer_path
    tokenizer = build_tokenizer(kind, data, split_text(data)[0], size, path)
    splits = Splits.from_text(data, tokenizer, cfg.block_size)
    return _Found(tokenizer, cfg.model_config(tokenizer.vocab_size), splits)


def _splits(data, tokenizer, model_config, cfg, run, on_scan, unfit: str = "") -> _Found:
    """The splits of `data` for a run with this tokenizer and model: a corpus's, checked
    (corpus.py), or the text's, from a resumed run's token cache or tokenized here, a
    character the tokenizer lacks named after `unfit`."""
    if isinstance(data, Corpus):
        splits, scanned = corpus_splits(data, tokenizer, model_config, cfg, run, on_scan)
        return _Found(tokenizer, model_config, splits, True, scanned)
    key = {"data_sha256": text_digest(data), "tokenizer": tokenizer.digest()}
    if run.has_checkpoint() and (cached := Splits.load(run.path, key)):
        return _Found(tokenizer, model_config, cached, True)
    try:
        splits = Splits.from_text(data, tokenizer, cfg.block_size)
    except UserError as e:
        raise UserError(f"{unfit}: {e}") from None
    return _Found(tokenizer, model_config, splits)


def _inherit(
    cfg: TrainConfig, run: RunFolder, may_change: tuple[str, ...], whose: str, fix: str
) -> tuple[GPTConfig, Tokenizer]:
    """The model config and tokenizer of `run`, the run this one continues or starts
    from. The settings it fixes must be cfg's too, else the error names the first that
    differs, `whose` value it is, and the `fix`; the `may_change` settings are cfg's."""
    fixed = [n for n in INHERITED if n not in may_change]
    if found := first_difference(cfg, run.train_config(), fixed):
        name, mine, theirs = found
        raise UserError(f"--{flag(name)} {mine} differs from {whose} {theirs}; {fix}")
    model_config = run.model_config()
    if cfg.block_size > model_config.block_size:  # only a fine-tune may ask this
        raise UserError(
            f"--block-size {cfg.block_size} is larger than {run.path}'s "
            f"{model_config.block_size}: its position table cannot grow; "
            f"use {model_config.block_size} or less"
        )
    # The model as cfg describes it (the same but for `may_change`, as checked), and what
    # TrainConfig does not hold: the vocabulary's size, an imported model's norm_eps.
    model_config = replace(model_config, **{name: getattr(cfg, name) for name in MODEL_FIELDS})
    return model_config, run.tokenizer(required=False)


def _share_found(
    found: _Found | None, data: str | Corpus, cfg: TrainConfig, ranks: Ranks
) -> _Found:
    """The other ranks get rank 0's tokenizer and model config, and tokenize their own
    copy of the text with it, or map their own copy of the corpus (the same data, as
    _read_data checked). One rank has it."""
    if ranks.size == 1:
        return found
    mine = None
    if ranks.main:
        tokenizer = found.tokenizer and tokenizer_to_json(found.tokenizer)
        mine = {"tokenizer": tokenizer, "model": asdict(found.model_config)}
    shared = ranks.broadcast_json(mine)
    if ranks.main:
        return found
    tokenizer = shared["tokenizer"] and tokenizer_from_json(shared["tokenizer"])
    if isinstance(data, Corpus):
        splits = data.splits
    else:
        splits = Splits.from_text(data, tokenizer, cfg.block_size)
    return _Found(tokenizer, GPTConfig.from_dict(shared["model"]), splits)
