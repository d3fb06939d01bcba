"""`python train.py`: resolve the settings, prepare the start, print the banner, run the
loop, print the summary. The library does the work (settings.py, then training/); this
file only talks to the person at the terminal."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Annotated

import typer

from mlx_gpt.cli.common import (
    apply_threads,
    blas_warning,
    environment_line,
    progress_report,
    say,
    threads_option,
    user_errors,
    warnings_as_lines,
)
from mlx_gpt.cli.flags import config_flags
from mlx_gpt.config import DATA, RUNTIME, START, TrainConfig
from mlx_gpt.errors import UserError

HELP = """Train the lecture's GPT on tiny Shakespeare (or any UTF-8 text) with MLX.

Writes the run folder (default out/PRESET): config.json, the tokenizer (vocab.json or
tokenizer.json), metrics.jsonl, checkpoints best/ (lowest val loss) and latest/, and
loss.png. `--show-config` prints what a preset, `--config` and the flags add up to.

**Examples**

* `python train.py` : gpt.py exactly (preset lecture)

* `python train.py --preset small` : a few minutes on a laptop CPU

* `python train.py --preset small --show-config` : the settings, without training

* `python train.py --preset nanogpt --max-iters 3000 --out-dir out/ng`

* `python train.py --out-dir out/ng --resume --max-iters 6000` : continue a run

* `python train.py --data my.txt --config my.json --dropout 0.1`

* `python train.py --preset small --tokenizer bpe --vocab-size 512` : subword tokens

* `python train.py --preset finetune --init-from out/gpt2 --data my.txt --out-dir out/ft`
"""


@user_errors
@config_flags(TrainConfig)  # --preset, --data, --block-size ...: one per TrainConfig field
def train_command(
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out-dir from latest/ (optimizer, schedule, RNGs).",
            rich_help_panel=START,
        ),
    ] = False,
    config: Annotated[
        str | None,
        typer.Option(
            help="JSON file of settings (or a run's config.json); flags win over it.",
            rich_help_panel=START,
        ),
    ] = None,
    show_config: Annotated[
        bool,
        typer.Option(
            "--show-config",
            help="Print the resolved settings (a --config file), then exit; writes nothing.",
            rich_help_panel=START,
        ),
    ] = False,
    data_changed: Annotated[
        bool,
        typer.Option(
            "--data-changed",
            help="With --resume: go on although the training text differs from the run's.",
            rich_help_panel=DATA,
        ),
    ] = False,
    threads: Annotated[int, threads_option(RUNTIME)] = 0,
    **settings,
) -> None:
    from mlx_gpt.distributed import ranks as distributed
    from mlx_gpt.settings import resolve

    apply_threads(threads)
    preset = settings.pop("preset")
    overrides = {k: v for k, v in settings.items() if v is not None}
    if show_config:
        print(json.dumps(resolve(preset, config, overrides, resume=resume).to_dict(), indent=2))
        return
    # Under mlx.launch this is one of several ranks. Rank 0 resolves the settings (a
    # resumed run's are in its folder) and sends them to the others.
    ranks = distributed.init(overrides.get("peer_timeout", TrainConfig.peer_timeout))
    settings = ranks.from_main(lambda: resolve(preset, config, overrides, resume=resume).to_dict())
    cfg = TrainConfig.from_dict(settings)
    ranks.timeout = cfg.peer_timeout
    train(cfg, ranks, resume=resume, data_changed=data_changed)


def train(cfg: TrainConfig, ranks, *, resume: bool, data_changed: bool) -> None:
    """The run, as the lecture's script reads: prepare, banner, loop, summary."""
    from mlx_gpt.errors import PeerLost
    from mlx_gpt.progress import progress_for
    from mlx_gpt.training import Loop, prepare

    progress = None
    try:
        with warnings_as_lines(), progress_report("checking the corpus's token ids") as scan:
            start = prepare(
                cfg, resume=resume, data_changed=data_changed, ranks=ranks, on_scan=scan
            )
        if ranks.main:
            print_banner(start)
            progress = progress_for(cfg.max_iters, start.state["step"])
        loop = Loop(start, [progress] if progress else [], sys.argv, display=progress)
        where = "latest/" if ranks.main else "rank 0's latest/"
        ranks.hint = lambda: (
            f"{where} holds step {loop.saved_step}. "
            f"Resume with: mlx.launch ... -- {resume_command(cfg)}"
        )
        with warnings_as_lines():
            result = loop.run()
    except KeyboardInterrupt:  # a second Ctrl-C (or signal) stops at once, wherever it lands
        if progress:
            progress.close()  # before the message, which the live bar would draw over
        if ranks.main:
            say(f"error: stopped at once; {what_is_saved(cfg)}")
        raise typer.Exit(130) from None
    except PeerLost as e:  # lost during prepare(), there is no hint: nothing to resume yet
        hint = f"; {ranks.hint()}" if ranks.hint else ""
        raise PeerLost(f"rank {ranks.rank}: {e}{hint}") from None
    finally:
        if progress:
            progress.close()
    if ranks.main:
        print_summary(cfg, result)
    if result.stopped == "interrupted":  # by a signal here or on another rank
        raise typer.Exit(result.exit_code or 130)


def print_banner(start) -> None:
    cfg, ranks = start.cfg, start.ranks
    on_ranks = f" | {ranks.describe()}" if ranks.size > 1 else ""
    print(
        f"mlx-gpt: {start.model.num_params():,} parameters | preset {cfg.preset} | "
        f"{environment_line()}{on_ranks}"
    )
    blas_warning()
    if start.micro_batch:
        print(start.micro_batch.trials_line())
        batch = start.micro_batch.line(cfg.block_size)
    else:
        micro = cfg.batch_size // (ranks.size * cfg.grad_accum)
        batch = f"micro-batch {micro} x {cfg.block_size} (accumulate {cfg.grad_accum})"
    if note := vocabulary_note(start.model.config, start.model.num_params()):
        print(note)
    checkpointing = ", activation checkpointing" if cfg.activation_checkpointing else ""
    print(f"compute {cfg.dtype} (weights float32){checkpointing} | {batch}")
    if note := dtype_auto_note(cfg):
        print(note)
    verb = f"resuming at step {start.state['step']}" if start.resumed else "training"
    print(f"{verb} to step {cfg.max_iters} in {cfg.run_dir}/")


def dtype_auto_note(cfg: TrainConfig) -> str | None:
    """For a preset whose --dtype is auto: the matmul speeds it chose by, when the
    dtype of the run is the one they chose."""
    from mlx_gpt.machine.speed import cached_choice, model_shape
    from mlx_gpt.presets import PRESETS

    if PRESETS.get(cfg.preset, {}).get("dtype") != "auto":
        return None
    choice = cached_choice(model_shape(cfg.block_size, cfg.n_embd))
    if choice is None or choice.dtype != cfg.dtype:
        return None
    return f"{choice.text()}: chose {choice.dtype}"


def vocabulary_note(model, params: int) -> str | None:
    """A line for a model that is mostly vocabulary (a large BPE on a small model): its
    embedding and head then take most of each step, which a newcomer would not guess."""
    tables = model.vocab_size * model.n_embd * (1 if model.tie_embeddings else 2)
    if tables <= params / 2:
        return None
    return (
        f"note: the {model.vocab_size:,}-token vocabulary holds {tables / params:.0%} of the "
        f"parameters, and its head's matmul most of each step's time; a smaller "
        f"--vocab-size or a wider model gets more out of a step"
    )


def print_summary(cfg: TrainConfig, result) -> None:
    from mlx_gpt.plot import plot_runs
    from mlx_gpt.training.samples import SAMPLES_FILE

    speed = f"{result.tokens_per_sec:,.0f} tok/s" if result.tokens_per_sec else "no step timed"
    if cfg.tokenizer != "char" and result.tokens_per_sec and result.chars_per_sec:
        speed += f" ({result.chars_per_sec:,.0f} chars/s)"
    best = "no evaluation finished yet"
    if result.best_step >= 0:
        bpc = f" ({result.best_val_bpc:.4f} bits/char)" if result.best_val_bpc else ""
        best = f"best val loss {result.best_val_loss:.4f}{bpc} at step {result.best_step}"
    print(
        f"{result.stopped} at step {result.step}: {best} | {speed} | "
        f"peak {result.peak_memory_mb:,.0f} MB"
    )
    if result.stopped == "early_stop":
        print(f"early stop: no new best val loss in {cfg.early_stop} evaluations")
    try:
        with warnings_as_lines():
            print(f"loss curves: {plot_runs([cfg.run_dir])[0]}")
    except UserError:  # stopped before its first evaluation ended: no curve to draw yet
        print("loss curves: none yet (no evaluation finished)")
    if result.best_step >= 0:
        print(f"sample it: python generate.py --out-dir {cfg.run_dir}")
    if (cfg.run_dir / SAMPLES_FILE).is_file():
        print(f"what it wrote as it learned: python -m mlx_gpt samples {cfg.run_dir}")
    if result.stopped == "interrupted":
        say(f"stopped by {result.signal}: {what_is_saved(cfg)}")


def what_is_saved(cfg: TrainConfig) -> str:
    """What latest/ holds, read from the disk, and the command that goes on from there:
    a resume where there is a checkpoint, a new start where there is none."""
    from mlx_gpt.runs import checkpoint

    found = checkpoint.resolve(cfg.run_dir / "latest")
    if found is None:
        return f"nothing is saved in {cfg.run_dir}/. Start again with: {start_command(sys.argv)}"
    step = checkpoint.load_state(found)["step"]
    return f"latest/ holds step {step}. Resume with: {resume_command(cfg)}"


def resume_command(cfg: TrainConfig) -> str:
    return f"python train.py --out-dir {cfg.run_dir} --resume"


def start_command(argv: list[str]) -> str:
    """The command line that ran, as `python train.py ...`, without --resume."""
    args = argv[1:]
    if args[:1] == ["train"]:  # python -m mlx_gpt train ..., or mlx-gpt train ...
        args = args[1:]
    return shlex.join(["python", "train.py", *(a for a in args if a != "--resume")])
