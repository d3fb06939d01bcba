"""How long a run will take here, told before the long wait.

The loop times one step and one evaluation batch before anything long happens. From
them it projects the rest of the run, and, by floating-point operations, how long a
run of the `small` preset would take on the same machine. The FLOPs per token are
nanoGPT's estimate (estimate_mfu, after the PaLM paper): 6N for the matmuls of the
forward and backward passes plus 12 L T C for attention; an evaluation batch is the
forward pass alone, a third of that.
"""

from __future__ import annotations

import time

from mlx_gpt.config import TrainConfig
from mlx_gpt.metrics import peak_memory_mb
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.presets import preset_config

LONG_RUN_S = 3600.0  # runs longer than this get the estimate line
QUICK_PRESET = "small"


def step_flops(model: GPTConfig, batch_size: int, block_size: int) -> float:
    """Floating-point operations of one training step (forward and backward). The count
    is bench/common.flops_per_token's, which the PyTorch baseline uses without mlx_gpt:
    the position table is a lookup and does not count."""
    params = GPT(model).num_params()  # lazy: the weights are never computed
    non_embedding = params - (0 if model.modern else model.block_size * model.n_embd)
    per_token = 6 * non_embedding + 12 * model.n_layer * model.n_embd * block_size
    return per_token * batch_size * block_size


def evaluations_after(step: int, cfg: TrainConfig) -> int:
    """The evaluations a run at `step` still makes: every eval_interval and at the end."""
    evals = cfg.max_iters // cfg.eval_interval - step // cfg.eval_interval
    return evals + (cfg.max_iters % cfg.eval_interval != 0)


def remaining_seconds(step: int, cfg: TrainConfig, step_s: float, eval_s: float) -> float:
    return (cfg.max_iters - step) * step_s + evaluations_after(step, cfg) * eval_s


def estimate_line(
    step: int, cfg: TrainConfig, model: GPTConfig, step_s: float, eval_batch_s: float
) -> str | None:
    """The line to print, or None for a run shorter than LONG_RUN_S."""
    eval_s = eval_batch_s * 2 * cfg.eval_iters
    total = remaining_seconds(step, cfg, step_s, eval_s)
    if total <= LONG_RUN_S:
        return None
    line = (
        f"on this machine: ~{roughly(step_s)} a step, ~{roughly(eval_s)} an evaluation; "
        f"{cfg.max_iters - step} steps ≈ {roughly(total)}."
    )
    if cfg.preset in (QUICK_PRESET, "tiny"):
        return line
    quick = roughly(quick_run_seconds(cfg, model, step_s))
    return f"{line} For a quick run on a CPU: --preset {QUICK_PRESET} (≈ {quick})"


def quick_run_seconds(cfg: TrainConfig, model: GPTConfig, step_s: float) -> float:
    """A whole run of the QUICK_PRESET here, from this run's step time, scaled by FLOPs."""
    quick = preset_config(QUICK_PRESET)
    seconds_per_flop = step_s / step_flops(model, cfg.batch_size, cfg.block_size)
    quick_model = quick.model_config(model.vocab_size)
    quick_s = seconds_per_flop * step_flops(quick_model, quick.batch_size, quick.block_size)
    return remaining_seconds(0, quick, quick_s, quick_s / 3 * 2 * quick.eval_iters)


class RunTimer:
    """Times the steps and evaluations of a run, and tells the display (if any) where it
    is: the bar's ETA with the evaluations still to come, and, once one step and one
    evaluation batch are timed, the estimate line for a long run."""

    def __init__(self, cfg: TrainConfig, model: GPTConfig, ranks: int, display=None):
        self.cfg, self.model, self.ranks, self.display = cfg, model, ranks, display
        self.step_s = float("nan")  # a step's seconds: the trial's, then a running mean
        self.steps = 0
        self.eval_s = 0.0  # the last evaluation's seconds (0 before the first)
        self.eval_start = 0.0
        self.eval_step = 0
        self.told = False  # the estimate line is given once

    def stepped(self, step: int, loss: float, seconds: float) -> None:
        self.steps += 1
        self.step_s += (seconds - self.step_s) / min(self.steps, 20)
        if self.display:
            eta = remaining_seconds(step, self.cfg, self.step_s, self.eval_s)
            self.display.step(step, loss, peak_memory_mb(), eta)

    def evaluation_starts(self, step: int) -> None:
        self.eval_start, self.eval_step = time.perf_counter(), step

    def evaluation_batch(self, split: str, done: int, total: int) -> None:
        if not self.display:
            return
        if not self.told:
            self.told = True
            # Each rank computes one batch in `ranks`: a batch's time, as one process's.
            batch_s = (time.perf_counter() - self.eval_start) / self.ranks
            line = estimate_line(self.eval_step, self.cfg, self.model, self.step_s, batch_s)
            if line:
                self.display.note(line)
        self.display.evaluation(split, done, total, time.perf_counter() - self.eval_start)

    def evaluation_ends(self) -> None:
        self.eval_s = time.perf_counter() - self.eval_start


def roughly(seconds: float) -> str:
    """25 s, 6 min, 41 h: a duration in the unit that reads best."""
    if seconds < 90:
        return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
