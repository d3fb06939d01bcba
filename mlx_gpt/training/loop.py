"""The training loop: steps, evaluations, checkpoints and metric records.

`Loop(start).run()` trains a prepared start (start.py) to max_iters, an early stop or a
stop signal. It is the only writer of the run folder: the lock, config.json, the
tokenizer, metrics.jsonl and the checkpoints. With several ranks, rank 0 alone writes.

Before anything long it makes trial steps, which it undoes, so that a run that cannot
fit in memory, or will take days, says so in seconds rather than after the first
evaluation. A new run saves latest/ before that evaluation: every stop can be resumed.
The records it emits, and the TrainResult it returns, are described in result.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import mlx.core as mx
import numpy as np

from mlx_gpt.data.tokens import get_batch
from mlx_gpt.errors import UserError
from mlx_gpt.metrics import JsonlLogger, Record, peak_memory_mb, truncate_after
from mlx_gpt.runs import checkpoint
from mlx_gpt.training import guards, signals
from mlx_gpt.training.corpus import write_scan
from mlx_gpt.training.estimate import RunTimer
from mlx_gpt.training.evaluation import EvaluationStopped, estimate_loss
from mlx_gpt.training.judging import Judges
from mlx_gpt.training.lock import RunLock
from mlx_gpt.training.result import TrainResult, steps_record
from mlx_gpt.training.start import Start
from mlx_gpt.training.step import build_step, trial_step

Reporter = Callable[[Record], None]


class Loop:
    """Trains one start; every record goes to metrics.jsonl and to each reporter, and
    the display (rank 0's progress bar) sees every step and evaluation batch too."""

    def __init__(
        self, start: Start, reporters: list[Reporter] = (), command: list[str] = (), display=None
    ):
        self.start = start
        self.cfg, self.state, self.ranks = start.cfg, start.state, start.ranks
        self.command = list(command)
        self.saved_step = self.state["step"]  # the step latest/ holds
        self.clock = guards.SaveClock(self.cfg.save_every)
        self.stop = signals.StopRequest()  # set by a signal; read between steps and batches
        # Rank 0's reporters, and metrics.jsonl once run() holds the folder; the others none.
        self.reporters: list[Reporter] = list(reporters) if self.ranks.main else []
        self.display = display if self.ranks.main else None
        self.run_start = time.perf_counter() - self.state["elapsed_s"]
        self.train_seconds = 0.0  # in steps this session, for the overall rate
        self.steps = 0  # steps this session
        self.chars_per_token = start.splits.chars_per_token()  # None if unknown
        self.timer = RunTimer(self.cfg, start.model.config, self.ranks.size, self.display)
        self.judges = Judges(start)  # HellaSwag and samples at each evaluation

    def run(self) -> TrainResult:
        """Train; one loop per run folder (RunLock), and rank 0 alone writes."""
        if not self.ranks.main:
            return self._train()
        run = self.start.run
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            lock = RunLock(run.path).acquire()
        except OSError as e:
            raise UserError(f"cannot write the run folder {run.path} ({e.strerror})") from None
        try:
            self._prepare_folder()
            logger = JsonlLogger(run.metrics_file)
            self.reporters.insert(0, logger)
            try:
                return self._train()
            finally:
                logger.close()
        finally:
            lock.release()

    def _prepare_folder(self) -> None:
        """A new run starts the folder afresh; a resumed one drops the records it redoes."""
        start = self.start
        if start.resumed:
            truncate_after(start.run.metrics_file, self.state["step"])
        else:
            start.run.metrics_file.unlink(missing_ok=True)
            if start.tokenizer is not None:
                start.tokenizer.save(start.run.path)
        self.judges.start_folder(start.resumed, self.state["step"])
        if not start.tokens_cached:
            start.splits.save(start.run.path, start.tokens_key)
        if start.scanned:
            write_scan(start.run.path, start.scanned)
        start.run.write_config(self.cfg, start.model.config, self.command, start.data_sha256)

    def _train(self) -> TrainResult:
        with signals.deferred_stop(self.stop):
            try:
                stopped = self._steps()
            except EvaluationStopped:  # abandoned between two batches: nothing recorded
                stopped = self._interrupted()
        splits = self.start.splits
        tokens = self.steps * self.cfg.batch_size * self.cfg.block_size
        tokens_per_sec = tokens / self.train_seconds if self.train_seconds else 0.0
        return TrainResult(
            step=self.state["step"],
            best_val_loss=self.state["best_val_loss"],
            best_step=self.state["best_step"],
            best_val_bpc=splits.bits_per_char("val", self.state["best_val_loss"]),
            stopped=stopped,
            signal=self.stop.name if stopped == "interrupted" else "",
            tokens_per_sec=tokens_per_sec,
            chars_per_sec=tokens_per_sec * (self.chars_per_token or 0.0),
            peak_memory_mb=peak_memory_mb(),
        )

    def _steps(self) -> str:
        """The steps; returns why they ended: finished, early_stop or interrupted."""
        cfg, state, start, stop = self.cfg, self.state, self.start, self.stop
        tokens_per_step = cfg.batch_size * cfg.block_size
        start.model.train()  # before tracing, since the compiled step keeps the mode it saw
        step = build_step(start.model, start.optimizer, cfg, self.ranks)
        self._trial(step)
        if state["step"] == 0:  # the loss at init, for the plot
            self._save("latest")  # the seed's weights: from here on, every stop resumes
            record = {"step": 0, "tokens": 0}
            self._evaluate(record)
            self._save("latest")
            self._emit(record)
        window: list[float] = []  # the losses since the last record
        window_start = time.perf_counter()
        while state["step"] < cfg.max_iters:
            step_start = time.perf_counter()
            x, y = get_batch(start.splits.train, cfg.batch_size, cfg.block_size, start.data_rng)
            loss = step(x, y)  # the update is applied; the mean loss of the batch
            guards.check_finite(loss, state["step"] + 1, self.saved_step, cfg)
            state["step"] += 1
            state["tokens"] += tokens_per_step
            window.append(loss)
            self.steps += 1
            self.timer.stepped(state["step"], loss, time.perf_counter() - step_start)

            eval_now = state["step"] % cfg.eval_interval == 0 or state["step"] == cfg.max_iters
            at_record = eval_now or state["step"] % cfg.log_interval == 0
            # An evaluation saves latest/ anyway; between them, the clock bounds what a
            # kill -9 can lose to --save-every minutes.
            if self.ranks.agree_to_save(self.clock.due(), at_record) and not eval_now:
                self._save("latest")
            # One rank stops at once; several agree only at records, which all reach together.
            stop_here = bool(stop) and self.ranks.size == 1
            if not (at_record or stop_here):
                continue
            seconds = time.perf_counter() - window_start
            self.train_seconds += seconds
            record = steps_record(state, window, seconds, start.splits, cfg)
            if eval_now:
                try:
                    halt = self._evaluate(record)
                except EvaluationStopped:
                    self._emit(record)  # the steps' record, without the evaluation's part
                    raise
                self._save("latest")
            self._emit(record)
            if eval_now and halt:
                reason = (
                    f"no new best val loss in {cfg.early_stop} evaluations; best "
                    f"{state['best_val_loss']:.4f} at step {state['best_step']}"
                )
                self._emit({"step": state["step"], "event": "early_stop", "reason": reason})
                return "early_stop"
            # Asked after the record is out, since a signal may come at any moment.
            if self.ranks.agree_to_stop(bool(stop)):
                return self._interrupted()
            window = []
            window_start = time.perf_counter()
        return "finished"

    def _interrupted(self) -> str:
        """Stopped by a signal, latest/ gets the last completed step if it has not yet."""
        if self.saved_step != self.state["step"]:
            self._save("latest")
        return "interrupted"

    def _trial(self, step) -> None:
        """Two trial steps, undone: the first compiles, the second is timed. The first
        step's peak memory is checked against the budget before anything long starts."""
        cfg, start = self.cfg, self.start
        budget = guards.memory_budget(cfg.max_memory)
        guards.limit_memory(budget)
        rng = np.random.default_rng([cfg.seed, 2])  # the training batches' draws are untouched
        x, y = get_batch(start.splits.train, cfg.batch_size, cfg.block_size, rng)
        mx.reset_peak_memory()  # this step's own peak (--micro-batch auto measured others)
        with guards.working_set():
            trial_step(step, start.model, start.optimizer, x, y)
        self.ranks.check(guards.check_memory, mx.get_peak_memory(), budget, cfg.batch_size)
        self.timer.step_s, _ = trial_step(step, start.model, start.optimizer, x, y)

    def _evaluate(self, record: Record) -> bool:
        """Evaluate into the record, save best/ on a new best, and say whether to stop early.
        A signal stops it between two batches (EvaluationStopped), on every rank alike."""
        state, splits = self.state, self.start.splits
        self.timer.evaluation_starts(state["step"])
        losses = estimate_loss(
            self.start.model,
            splits,
            self.cfg,
            self.ranks,
            on_batch=self.timer.evaluation_batch,
            stop=lambda: self.ranks.agree_to_stop(bool(self.stop)),
        )
        self.timer.evaluation_ends()
        record["val_loss"], record["eval_train_loss"] = losses["val"], losses["train"]
        if splits.val_chars:  # unknown for a corpus nanoGPT or build-nanogpt prepared
            record["val_bpc"] = splits.bits_per_char("val", losses["val"])
            record["eval_train_bpc"] = splits.bits_per_char("train", losses["train"])
        if losses["val"] < state["best_val_loss"]:
            state.update(best_val_loss=losses["val"], best_step=state["step"], evals_since_best=0)
            self._save("best")
        else:
            state["evals_since_best"] += 1
        text = self.judges.judge(state["step"], losses["val"], record)
        if text and self.display:
            self.display.note(f"sample at step {state['step']}:\n{text}")
        return self.cfg.early_stop > 0 and state["evals_since_best"] >= self.cfg.early_stop

    def _save(self, which: str) -> None:
        """Save checkpoint `which` (best or latest). Every rank calls it at the same step,
        since their random keys are gathered into it; rank 0 writes."""
        start = self.start
        guards.check_finite_weights(start.model, self.state["step"], self.saved_step, self.cfg)
        saved = {**self.state, "data_rng": start.data_rng.bit_generator.state}
        saved["mlx_key"] = checkpoint.rng_key()
        if self.ranks.size > 1:
            saved["mlx_keys"] = self.ranks.gather_json(checkpoint.rng_key())
        if self.ranks.main:
            checkpoint.save(start.run.path / which, start.model, start.optimizer, saved)
        if which == "latest":
            self.saved_step = self.state["step"]
            self.clock.saved()

    def _emit(self, record: Record) -> None:
        record["lr"] = self.start.optimizer.learning_rate.item()
        record["peak_memory_mb"] = round(peak_memory_mb(), 1)
        record["elapsed_s"] = round(time.perf_counter() - self.run_start, 3)
        self.state["elapsed_s"] = record["elapsed_s"]
        for report in self.reporters:
            report(record)
