"""What a person watching a run sees: a live bar on a terminal, plain lines in a log.

Both take the loop's records (one line each at evaluations, or always in plain mode)
and three more calls that are never logged: `step` after every optimizer step,
`evaluation` after every evaluation batch (with the seconds since it began), and `note`
for a line such as the time estimate. The loop calls them on rank 0 only.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from mlx_gpt.metrics import Record

PLAIN_EVERY_S = 10.0  # plain mode prints evaluation progress at most this often


def format_record(r: Record, max_iters: int) -> str:
    parts = [f"step {r['step']:>{len(str(max_iters))}}/{max_iters}"]
    if "train_loss" in r:
        parts.append(f"loss {r['train_loss']:.4f}")
    if "val_loss" in r:
        parts.append(f"val {r['val_loss']:.4f} (train {r['eval_train_loss']:.4f})")
    if "tokens_per_sec" in r:
        parts.append(f"{r['tokens_per_sec']:,.0f} tok/s")
        parts.append(f"{r['ms_per_step']:.1f} ms/step")
    if "peak_memory_mb" in r:
        parts.append(f"peak {r['peak_memory_mb']:,.0f} MB")
    if "event" in r:
        parts.append(f"{r['event']}: {r.get('reason', '')}")
    return " | ".join(parts)


def duration(seconds: float) -> str:
    """0:04:05 for 245 seconds; -:--:-- when not known yet."""
    if seconds != seconds or seconds < 0:  # nan
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def evaluation_left(split: str, done: int, total: int, elapsed_s: float) -> tuple[int, float]:
    """Batches done over both splits (train, then val), and the seconds still to go."""
    done_all = done + (total if split == "val" else 0)
    return done_all, elapsed_s / done_all * (2 * total - done_all)


class PlainProgress:
    """One line per record, and evaluation progress every PLAIN_EVERY_S: for logs, pipes, CI."""

    def __init__(self, max_iters: int, stream: TextIO | None = None):
        self.max_iters = max_iters
        self.stream = stream or sys.stdout
        self.last_line = 0.0

    def __call__(self, record: Record) -> None:
        self._print(format_record(record, self.max_iters))

    def step(self, step: int, loss: float, peak_mb: float, eta_s: float) -> None:
        pass  # a line per step would drown the records

    def evaluation(self, split: str, done: int, total: int, elapsed_s: float) -> None:
        _, left = evaluation_left(split, done, total, elapsed_s)
        now = time.perf_counter()
        if done == 1 or done == total or now - self.last_line >= PLAIN_EVERY_S:
            self._print(f"evaluating {split}: batch {done}/{total}, ETA {duration(left)}")
            self.last_line = now

    def note(self, line: str) -> None:
        self._print(line)

    def _print(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class RichProgress:
    """A live training bar (step, loss, tokens/sec, peak memory, ETA with the evaluations
    to come) and, while one runs, an evaluation bar with its own ETA."""

    def __init__(self, max_iters: int, start_step: int = 0):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.max_iters = max_iters
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
        )
        self.train = self.progress.add_task(
            "train", total=max_iters, completed=start_step, info="loss -"
        )
        self.eval = self.progress.add_task("eval", total=1, visible=False, info="")
        self.fields = {"loss": "-", "speed": "- tok/s", "peak": "", "eta": "ETA -:--:--"}
        self.progress.start()

    def __call__(self, record: Record) -> None:
        if "tokens_per_sec" in record:
            self.fields["speed"] = f"{record['tokens_per_sec']:,.0f} tok/s"
        self.progress.update(self.train, completed=record["step"], info=self._info())
        if "val_loss" in record or "event" in record:
            self.progress.console.print(format_record(record, self.max_iters))

    def step(self, step: int, loss: float, peak_mb: float, eta_s: float) -> None:
        self.fields.update(loss=f"loss {loss:.4f}", peak=f"peak {peak_mb:,.0f} MB")
        self.fields["eta"] = f"ETA {duration(eta_s)}"
        self.progress.update(self.train, completed=step, info=self._info())

    def evaluation(self, split: str, done: int, total: int, elapsed_s: float) -> None:
        done_all, left = evaluation_left(split, done, total, elapsed_s)
        info = f"{split} batch {done}/{total} | ETA {duration(left)}"
        visible = done_all < 2 * total
        self.progress.update(
            self.eval, total=2 * total, completed=done_all, info=info, visible=visible
        )

    def note(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False)  # text as it is

    def _info(self) -> str:
        return " | ".join(v for v in self.fields.values() if v)

    def close(self) -> None:
        self.progress.stop()


def progress_for(max_iters: int, start_step: int = 0) -> PlainProgress | RichProgress:
    """The rich bar on a terminal, plain lines otherwise."""
    if sys.stdout.isatty():
        return RichProgress(max_iters, start_step)
    return PlainProgress(max_iters)
