"""The training loop: a compiled step, evaluation, checkpoints, metric records.

Records (one dict per log interval, to metrics.jsonl and to any reporter):
  step, tokens                   optimizer updates done, training tokens seen
  train_loss                     mean training-batch loss since the previous record
  train_bpc                      train_loss in bits per character (see data.Splits)
  val_loss, eval_train_loss      at evaluations: mean loss over eval_iters batches of
                                 each split, dropout off (the lecture's estimate_loss)
  val_bpc, eval_train_bpc        the same in bits per character: comparable across
                                 tokenizers (a BPE token holds several characters)
  lr, tokens_per_sec, chars_per_sec, ms_per_step, peak_memory_mb, elapsed_s
  event, reason                  why training stopped early (early_stop)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from mlx_gpt import checkpoint
from mlx_gpt.config import FIXED_ON_RESUME, TrainConfig, first_difference, flag
from mlx_gpt.data import Splits, get_batch, load_text, split_text
from mlx_gpt.errors import UserError
from mlx_gpt.metrics import JsonlLogger, Record, peak_memory_mb, truncate_after
from mlx_gpt.model import GPT, GPTConfig
from mlx_gpt.ranks import Ranks, check_same_data
from mlx_gpt.run import RunFolder
from mlx_gpt.tokenizer import build_tokenizer, tokenizer_from_json, tokenizer_to_json
from mlx_gpt.training import guards, signals
from mlx_gpt.training.lock import RunLock
from mlx_gpt.training.optimizer import make_optimizer
from mlx_gpt.training.start import Source
from mlx_gpt.training.step import AccumulatingStep, micro_batch_size

Reporter = Callable[[Record], None]


def loss_fn(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    logits = model(x)  # (B, T, vocab_size)
    return nn.losses.cross_entropy(logits, y, reduction="mean")


def make_train_step(model: nn.Module, optimizer: optim.Optimizer, grad_clip: float, compile=True):
    """Forward, backward and update as one function of (x, y) that returns the loss.

    Compiled, it captures the model, the optimizer and the random state (dropout) as
    inputs and outputs, so each call reads and writes them. The caller evaluates the
    state once per step. The training flag is read when the step is traced: build the
    step with the model in train mode.
    """
    loss_and_grad = nn.value_and_grad(model, loss_fn)

    def step(x: mx.array, y: mx.array) -> mx.array:
        loss, grads = loss_and_grad(model, x, y)
        if grad_clip > 0:
            grads, _ = optim.clip_grad_norm(grads, grad_clip)
        optimizer.update(model, grads)
        return loss

    if not compile:
        return step
    state = [model.state, optimizer.state, mx.random.state]
    return partial(mx.compile, inputs=state, outputs=state)(step)


def estimate_loss(
    model: GPT, splits: Splits, cfg: TrainConfig, ranks: Ranks | None = None
) -> dict[str, float]:
    """Mean loss of each split over eval_iters batches, dropout off.

    Every evaluation draws the same batches (a generator seeded afresh), so points on
    the loss curve differ by the model alone, and evaluating draws nothing from the
    training batch stream (a resumed run sees the same batches as an unbroken one).
    With several ranks, each computes every ranks.size-th batch and the sums are added.
    """
    ranks = ranks or Ranks()
    model.eval()
    rng = np.random.default_rng([cfg.seed, 1])
    out = {}
    for name in ("train", "val"):
        data = getattr(splits, name)
        total = 0.0
        for i in range(cfg.eval_iters):
            x, y = get_batch(data, cfg.batch_size, cfg.block_size, rng)  # every rank draws all
            if i % ranks.size == ranks.rank:
                total += loss_fn(model, x, y).item()
        if ranks.size > 1:
            total = ranks.run(lambda t=total: ranks.all_sum(mx.array(t))).item()
        out[name] = total / cfg.eval_iters
    model.train()
    return out


def build_step(model: GPT, optimizer: optim.Optimizer, cfg: TrainConfig, ranks: Ranks):
    """step(x, y) -> the batch's mean loss (a float), the update applied. One rank and
    one micro-batch: the single compiled step, one mx.eval. Otherwise: micro-batches and
    an all-reduce (accumulate.py)."""
    if ranks.size == 1 and cfg.grad_accum == 1:
        step = make_train_step(model, optimizer, cfg.grad_clip)

        def one_step(x: mx.array, y: mx.array) -> float:
            loss = step(x, y)
            mx.eval(loss, model.state, optimizer.state)
            return loss.item()  # evaluated already: a copy, not a sync

        return one_step
    return AccumulatingStep(model, optimizer, cfg.grad_clip, ranks, cfg.grad_accum, loss_fn)


@dataclass
class TrainResult:
    step: int
    best_val_loss: float
    best_step: int
    best_val_bpc: float  # best_val_loss in bits per character
    stopped: str  # "finished", "early_stop" or "interrupted"
    signal: str  # the signal that interrupted the run (SIGINT, SIGTERM, SIGHUP), or ""
    tokens_per_sec: float  # over the whole run, evaluations excluded
    chars_per_sec: float  # the same in characters of text (= tokens_per_sec for char)
    peak_memory_mb: float

    @property
    def exit_code(self) -> int:
        return signals.exit_code(self.signal)


def _rng_key() -> list[int]:
    return [int(v) for v in np.array(mx.random.state[0])]


def _restore_rng_key(key: list[int]) -> None:
    # mx.random.key(seed) is [seed >> 32, seed & 0xFFFFFFFF]: re-seeding restores any key.
    mx.random.seed((key[0] << 32) | key[1])


class Trainer:
    """Everything a run needs, checked and loaded before anything is written."""

    def __init__(
        self,
        cfg: TrainConfig,
        resume: bool = False,
        command: list[str] | None = None,
        data_changed: bool = False,
        ranks: Ranks | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.ranks = ranks or Ranks()
        micro_batch_size(cfg.batch_size, cfg.grad_accum, self.ranks.size)
        self.run = RunFolder(cfg.run_dir)
        self.command = command or []
        self.resume_from: Path | None = None
        self.source: Source | None = None
        text = self._read_text()  # every rank reads its own copy; they must be the same
        # rank 0 alone has the run folder (and a source run); its error stops every rank
        self.ranks.check(self._prepare, text, resume, data_changed, main_only=True)
        self._share_setup(text)

        mx.random.seed(cfg.seed)
        self.model = GPT(self.model_config)
        if self.source:
            self.source.load_into(self.model)
        self.optimizer = make_optimizer(cfg)
        self.optimizer.init(self.model.trainable_parameters())
        self.data_rng = np.random.default_rng(cfg.seed)
        self.state: dict[str, Any] = {
            "step": 0,
            "tokens": 0,
            "best_val_loss": math.inf,
            "best_step": -1,
            "evals_since_best": 0,
            "elapsed_s": 0.0,
        }
        self.saved_step = 0  # the step latest/ holds
        if self.resume_from is not None:
            self._load(self.resume_from)
        self._share_state()
        if self.state["step"] >= cfg.max_iters:
            raise UserError(
                f"the run in {self.run.path} is already at step {self.state['step']}; "
                f"pass a --max-iters above it to train further"
            )

    def _read_text(self) -> str:
        text, error = None, None
        try:
            text = load_text(self.cfg.data)
        except UserError as e:
            if self.ranks.size == 1:
                raise
            error = str(e)
        self.data_sha256 = guards.text_digest(text) if text is not None else None
        check_same_data(self.ranks, self.data_sha256, error)
        return text

    def _prepare(self, text: str, resume: bool, data_changed: bool) -> None:
        """Rank 0: the run folder's checks, the tokenizer, the splits, the model config."""
        cfg = self.cfg
        if self.run.path.exists() and not self.run.path.is_dir():
            raise UserError(f"--out-dir {self.run.path} is a file; give a folder")
        if resume:
            self.resume_from = self.run.checkpoint("latest") if self.run.has_checkpoint() else None
            if self.resume_from is None:
                raise UserError(
                    f"no checkpoint to resume in {self.run.path}; drop --resume to start a new run"
                )
            self._check_same_model()
            self.tokenizer = self.run.tokenizer()
        elif self.run.has_checkpoint():
            raise UserError(
                f"{self.run.path} already holds a trained run; pass --resume to continue it "
                "or choose another --out-dir"
            )
        elif cfg.init_from:
            self.source = Source(cfg)  # checks that the settings fit the source
            self.tokenizer = self.source.tokenizer
        if resume:
            saved = self.run.read_config().get("data_sha256")
            guards.check_same_data(saved, self.data_sha256, data_changed)
        elif self.source is None:
            kind, size, path = cfg.tokenizer, cfg.vocab_size, cfg.tokenizer_path
            self.tokenizer = build_tokenizer(kind, text, split_text(text)[0], size, path)
        # what the token cache was made from: a resume with the same reads it back
        self.tokens_key = {"data_sha256": self.data_sha256, "tokenizer": self.tokenizer.digest()}
        self.splits = Splits.load(self.run.path, self.tokens_key) if resume else None
        self.tokens_cached = self.splits is not None
        if self.splits is None:
            try:
                self.splits = Splits.from_text(text, self.tokenizer, cfg.block_size)
            except UserError as e:
                if resume:
                    raise UserError(f"the data does not fit this run's vocabulary: {e}") from None
                if self.source:
                    where = self.source.run.path
                    raise UserError(f"--data does not fit {where}'s vocabulary: {e}") from None
                raise
        if self.source:
            self.model_config = self.source.model_config
        else:
            self.model_config = cfg.model_config(self.tokenizer.vocab_size)
            if resume:  # what TrainConfig does not hold (an imported model's norm_eps)
                self.model_config.norm_eps = self.run.model_config().norm_eps

    def _share_setup(self, text: str) -> None:
        """The other ranks get rank 0's tokenizer and model config, and tokenize their
        own copy of the text with it (the same text: checked)."""
        if self.ranks.size == 1:
            return
        mine = None
        if self.ranks.main:
            mine = {
                "tokenizer": tokenizer_to_json(self.tokenizer),
                "model": asdict(self.model_config),
            }
        shared = self.ranks.broadcast_json(mine)
        if not self.ranks.main:
            self.tokenizer = tokenizer_from_json(shared["tokenizer"])
            self.model_config = GPTConfig.from_dict(shared["model"])
            self.splits = Splits.from_text(text, self.tokenizer, self.cfg.block_size)

    def _share_state(self) -> None:
        """Rank 0's weights, optimizer state, step and generators on every rank; each rank
        then has a random key of its own (its dropout masks differ, as in DDP)."""
        if self.ranks.size == 1:
            return
        self.model.update(self.ranks.broadcast(self.model.parameters()))
        self.optimizer.state = self.ranks.broadcast(self.optimizer.state)
        mine = {**self.state, "data_rng": self.data_rng.bit_generator.state}
        mine["mlx_keys"] = self._saved_keys
        shared = self.ranks.broadcast_json(mine if self.ranks.main else None)
        self.data_rng.bit_generator.state = shared.pop("data_rng")
        keys = shared.pop("mlx_keys")
        self.state.update(shared)
        self.saved_step = self.state["step"]
        if keys and len(keys) == self.ranks.size:  # resumed: each rank's own key back
            _restore_rng_key(keys[self.ranks.rank])
        else:  # a new run: rank r's key from the seed and r
            mx.random.seed(self.cfg.seed * 1000 + self.ranks.rank)

    def _check_same_model(self) -> None:
        if source := self.run.read_config().get("source"):
            raise UserError(
                f"{self.run.path} holds imported weights ({source}), not a run to resume; "
                f"fine-tune them with --init-from {self.run.path} --out-dir NEW"
            )
        if found := first_difference(self.cfg, self.run.train_config(), FIXED_ON_RESUME):
            name, mine, theirs = found
            raise UserError(
                f"--{flag(name)} {mine} differs from the checkpoint's {theirs} in "
                f"{self.run.path}; drop it to resume, or pick another --out-dir"
            )

    def _load(self, path: Path) -> None:
        checkpoint.load_model(path, self.model)
        checkpoint.load_optimizer(path, self.optimizer)
        self.optimizer.init(self.model.trainable_parameters())
        saved = checkpoint.load_state(path)
        self.data_rng.bit_generator.state = saved.pop("data_rng")
        _restore_rng_key(saved.pop("mlx_key"))
        self._saved_keys = saved.pop("mlx_keys", None)  # every rank's, in a distributed run
        self.state.update(saved)
        self.saved_step = self.state["step"]

    _saved_keys: list | None = None

    def _save(self, which: str) -> None:
        """Every rank calls it at the same step (their random keys are gathered); rank 0
        writes."""
        guards.check_finite_weights(self.model, self.state["step"], self.saved_step, self.cfg)
        state = {**self.state, "data_rng": self.data_rng.bit_generator.state}
        state["mlx_key"] = _rng_key()
        if self.ranks.size > 1:
            state["mlx_keys"] = self.ranks.gather_json(_rng_key())
        if self.ranks.main:
            checkpoint.save(self.run.path / which, self.model, self.optimizer, state)
        if which == "latest":
            self.saved_step = self.state["step"]
            self._clock.saved()

    def _prepare_folder(self) -> None:
        if self.resume_from is not None:
            truncate_after(self.run.metrics_file, self.state["step"])
        else:
            self.run.metrics_file.unlink(missing_ok=True)
            self.tokenizer.save(self.run.path)
        if not self.tokens_cached:
            self.splits.save(self.run.path, self.tokens_key)
        self.run.write_config(self.cfg, self.model.config, self.command, self.data_sha256)

    def train(self, reporters: list[Reporter] = ()) -> TrainResult:
        """Train to max_iters (or an early stop, or a stop signal); every record goes to
        metrics.jsonl and to each reporter. One trainer per run folder (RunLock)."""
        if not self.ranks.main:  # the other ranks write nothing
            return self._train([])
        try:
            self.run.path.mkdir(parents=True, exist_ok=True)
            lock = RunLock(self.run.path).acquire()
        except OSError as e:
            raise UserError(f"cannot write the run folder {self.run.path} ({e.strerror})") from None
        try:
            return self._train(reporters)
        finally:
            lock.release()

    def _train(self, reporters: list[Reporter]) -> TrainResult:
        logger = None
        self._emitters = []
        if self.ranks.main:
            self._prepare_folder()
            logger = JsonlLogger(self.run.metrics_file)
            self._emitters = [logger, *reporters]
        self._run_start = time.perf_counter() - self.state["elapsed_s"]
        self._train_seconds = 0.0  # in steps this session, for the overall rate
        self._steps = 0
        self._clock = guards.SaveClock(self.cfg.save_every)
        try:
            with signals.deferred_stop() as stop:
                stopped = self._loop(stop)
        finally:
            if logger:
                logger.close()
        tokens = self._steps * self.cfg.batch_size * self.cfg.block_size
        tokens_per_sec = tokens / self._train_seconds if self._train_seconds else 0.0
        return TrainResult(
            step=self.state["step"],
            best_val_loss=self.state["best_val_loss"],
            best_step=self.state["best_step"],
            best_val_bpc=self.splits.bits_per_char("val", self.state["best_val_loss"]),
            stopped=stopped,
            signal=stop.name if stopped == "interrupted" else "",
            tokens_per_sec=tokens_per_sec,
            chars_per_sec=tokens_per_sec * self.splits.train_chars / len(self.splits.train),
            peak_memory_mb=peak_memory_mb(),
        )

    def _emit(self, r: Record) -> None:
        r["lr"] = self.optimizer.learning_rate.item()
        r["peak_memory_mb"] = round(peak_memory_mb(), 1)
        r["elapsed_s"] = round(time.perf_counter() - self._run_start, 3)
        self.state["elapsed_s"] = r["elapsed_s"]
        for fn in self._emitters:
            fn(r)

    def _evaluate(self, r: Record) -> bool:
        """Evaluate into r, save best/ on a new best, and say whether to stop early."""
        st = self.state
        losses = estimate_loss(self.model, self.splits, self.cfg, self.ranks)
        r["val_loss"], r["eval_train_loss"] = losses["val"], losses["train"]
        r["val_bpc"] = self.splits.bits_per_char("val", losses["val"])
        r["eval_train_bpc"] = self.splits.bits_per_char("train", losses["train"])
        if losses["val"] < st["best_val_loss"]:
            st.update(best_val_loss=losses["val"], best_step=st["step"], evals_since_best=0)
            self._save("best")
        else:
            st["evals_since_best"] += 1
        return self.cfg.early_stop > 0 and st["evals_since_best"] >= self.cfg.early_stop

    def _loop(self, stop: signals.StopRequest) -> str:
        """The steps; returns why they ended: finished, early_stop or interrupted."""
        cfg, st = self.cfg, self.state
        tokens_per_step = cfg.batch_size * cfg.block_size
        chars_per_token = self.splits.train_chars / len(self.splits.train)
        budget = guards.memory_budget(cfg.max_memory)
        guards.limit_metal_memory(budget)
        self.model.train()  # before tracing: the compiled step keeps the mode it saw
        step_fn = build_step(self.model, self.optimizer, cfg, self.ranks)
        if st["step"] == 0:  # the loss at init, for the plot
            r = {"step": 0, "tokens": 0}
            self._evaluate(r)
            self._save("latest")
            self._emit(r)
        window: list[float] = []  # losses since the last record
        window_start = time.perf_counter()
        while st["step"] < cfg.max_iters:
            x, y = get_batch(self.splits.train, cfg.batch_size, cfg.block_size, self.data_rng)
            loss = step_fn(x, y)  # the update is applied; the mean loss of the batch
            guards.check_finite(loss, st["step"] + 1, self.saved_step, cfg)
            if self._steps == 0:  # the first step shows what a step needs
                peak = mx.get_peak_memory()
                self.ranks.check(guards.check_memory, peak, budget, cfg.batch_size)
            st["step"] += 1
            st["tokens"] += tokens_per_step
            window.append(loss)
            self._steps += 1

            eval_now = st["step"] % cfg.eval_interval == 0 or st["step"] == cfg.max_iters
            at_record = eval_now or st["step"] % cfg.log_interval == 0
            # several ranks act on the save clock and on signals together, at records
            if self.ranks.agree_flag(self._clock.due(), at_record) and not eval_now:
                self._save("latest")  # a kill -9 loses at most --save-every minutes
            if not (at_record or (stop and self.ranks.size == 1)):
                continue
            seconds = time.perf_counter() - window_start
            self._train_seconds += seconds
            train_loss = sum(window) / len(window)
            tokens_per_sec = len(window) * tokens_per_step / seconds
            r = {
                "step": st["step"],
                "tokens": st["tokens"],
                "train_loss": train_loss,
                "train_bpc": self.splits.bits_per_char("train", train_loss),
                "tokens_per_sec": round(tokens_per_sec, 1),
                "chars_per_sec": round(tokens_per_sec * chars_per_token, 1),
                "ms_per_step": round(1000 * seconds / len(window), 2),
            }
            halt = self._evaluate(r) if eval_now else False
            if eval_now:
                self._save("latest")
            self._emit(r)
            if halt:
                reason = (
                    f"no new best val loss in {cfg.early_stop} evaluations; best "
                    f"{st['best_val_loss']:.4f} at step {st['best_step']}"
                )
                self._emit({"step": st["step"], "event": "early_stop", "reason": reason})
                return "early_stop"
            if self.ranks.agree_flag(bool(stop)):  # after emit: a signal comes at any moment
                if self.saved_step != st["step"]:
                    self._save("latest")
                return "interrupted"
            window = []
            window_start = time.perf_counter()
        return "finished"
