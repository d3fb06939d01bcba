"""Command line: `python train.py`, `python generate.py`, `python -m mlx_gpt info|plot`.

The commands parse flags, call the library and turn a UserError into one line on
stderr and exit code 2.
"""

from __future__ import annotations

import sys
import warnings
from typing import Annotated

import typer

from mlx_gpt.cli import importing as cli_import
from mlx_gpt.cli.common import user_errors
from mlx_gpt.cli.flags import config_flags
from mlx_gpt.config import DATA, EVAL, RUNTIME, TrainConfig
from mlx_gpt.errors import UserError

app = typer.Typer(
    help="mlx-gpt: the lecture's GPT, and GPT-2, trained, imported and sampled with MLX.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
app.add_typer(cli_import.app, name="import")


def environment_line() -> str:
    import mlx.core as mx

    from mlx_gpt import linux_blas

    return f"device {mx.default_device().type.name} | BLAS: {linux_blas.describe()}"


def blas_warning() -> None:
    """One line on stderr when MLX is on its slow reference BLAS: why, and the fix."""
    from mlx_gpt import linux_blas

    if message := linux_blas.warning():
        typer.echo(f"warning: {message}", err=True)


def apply_threads(threads: int) -> None:
    """--threads: OpenBLAS's thread count for MLX's matmuls (0: every core)."""
    from mlx_gpt import linux_blas

    if threads < 0:
        raise UserError("--threads must be >= 0 (0: every core)")
    if threads:
        linux_blas.set_threads(threads)


def _threads_option(panel: str | None = None):
    return typer.Option(
        help="CPU threads for MLX's matmuls (OpenBLAS on Linux). [default: every core]",
        show_default=False,
        rich_help_panel=panel,
    )


TRAIN_HELP = """Train the lecture's GPT on tiny Shakespeare (or any UTF-8 text) with MLX.

Writes the run folder (default out/PRESET): config.json, the tokenizer (vocab.json or
tokenizer.json), metrics.jsonl, checkpoints best/ (lowest val loss) and latest/, and
loss.png.

**Examples**

* `python train.py` : gpt.py exactly (preset lecture)

* `python train.py --preset small` : a few minutes on a laptop CPU

* `python train.py --preset nanogpt --max-iters 3000 --out-dir out/ng`

* `python train.py --out-dir out/ng --resume --max-iters 6000` : continue a run

* `python train.py --data my.txt --config my.json --dropout 0.1`

* `python train.py --preset small --tokenizer bpe --vocab-size 512` : subword tokens

* `python train.py --preset finetune --init-from out/gpt2 --data my.txt --out-dir out/ft`
"""


@app.command("train", help=TRAIN_HELP)
@user_errors
@config_flags(TrainConfig)  # --preset, --data, --block-size ... : one per TrainConfig field
def train_command(
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out-dir from latest/ (optimizer, schedule, RNGs).",
            rich_help_panel=EVAL,
        ),
    ] = False,
    config: Annotated[
        str | None,
        typer.Option(
            help="JSON file of settings (or a run's config.json); flags win over it.",
            rich_help_panel=RUNTIME,
        ),
    ] = None,
    data_changed: Annotated[
        bool,
        typer.Option(
            "--data-changed",
            help="With --resume: go on although the training text differs from the run's.",
            rich_help_panel=DATA,
        ),
    ] = False,
    threads: Annotated[int, _threads_option(RUNTIME)] = 0,
    **settings,
) -> None:
    from mlx_gpt import ranks as distributed

    apply_threads(threads)
    preset = settings.pop("preset")
    overrides = {k: v for k, v in settings.items() if v is not None}
    # Under mlx.launch: one of several ranks. Rank 0 resolves the settings (a resumed
    # run's are in its folder) and sends them to the others.
    ranks = distributed.init(overrides.get("peer_timeout", TrainConfig.peer_timeout))
    settings = ranks.from_main(lambda: _resolve(preset, config, overrides, resume).to_dict())
    cfg = TrainConfig.from_dict(settings)
    ranks.timeout = cfg.peer_timeout
    _train(cfg, resume, data_changed, ranks)


def _resolve(preset, config, overrides, resume: bool):
    from mlx_gpt.config import resolve
    from mlx_gpt.run import RunFolder

    base = None
    if resume:
        run_dir = overrides.get("out_dir") or f"out/{preset or 'lecture'}"
        run = RunFolder(run_dir)
        if not run.config_file.is_file():
            raise UserError(f"no run to resume in {run_dir}; drop --resume to start a new run")
        base = run.train_config()
        overrides.setdefault("out_dir", run_dir)
    return resolve(preset, config, overrides, base=base)


def _train(cfg, resume: bool, data_changed: bool, ranks) -> None:
    from mlx_gpt.errors import PeerLost
    from mlx_gpt.training.loop import Trainer

    trainer = Trainer(cfg, resume, sys.argv, data_changed, ranks)
    where = "latest/" if ranks.main else "rank 0's latest/"
    ranks.hint = lambda: (
        f"{where} holds step {trainer.saved_step}. "
        f"Resume with: mlx.launch ... -- {_resume_command(cfg)}"
    )
    try:
        _run_trainer(trainer, cfg, resume)
    except KeyboardInterrupt:  # a second Ctrl-C (or signal), wherever it lands: stop at once
        typer.echo(
            f"error: stopped at once; latest/ holds step {trainer.saved_step}. "
            f"Resume with: {_resume_command(cfg)}",
            err=True,
        )
        raise typer.Exit(130) from None
    except PeerLost as e:
        raise PeerLost(f"rank {ranks.rank}: {e}; {ranks.hint()}") from None


def _resume_command(cfg) -> str:
    return f"python train.py --out-dir {cfg.run_dir} --resume"


def _run_trainer(trainer, cfg, resume: bool) -> None:
    from mlx_gpt.metrics import progress_for

    if not trainer.ranks.main:  # the other ranks print nothing but errors
        result = trainer.train()
        if result.stopped == "interrupted":  # by a signal here or on another rank
            raise typer.Exit(result.exit_code or 130)
        return
    ranks = f" | {trainer.ranks.describe()}" if trainer.ranks.size > 1 else ""
    print(
        f"mlx-gpt: {trainer.model.num_params():,} parameters | preset {cfg.preset} | "
        f"{environment_line()}{ranks}"
    )
    blas_warning()
    start = trainer.state["step"]
    verb = f"resuming at step {start}" if resume else "training"
    print(f"{verb} to step {cfg.max_iters} in {cfg.run_dir}/")
    progress = progress_for(cfg.max_iters, start)
    try:
        with warnings.catch_warnings():  # e.g. a damaged metrics line: one line, no source
            warnings.showwarning = lambda message, *_, **__: typer.echo(
                f"warning: {message}", err=True
            )
            result = trainer.train([progress])
    finally:
        progress.close()
    speed = f"{result.tokens_per_sec:,.0f} tok/s"
    if cfg.tokenizer != "char":
        speed += f" ({result.chars_per_sec:,.0f} chars/s)"
    print(
        f"{result.stopped} at step {result.step}: best val loss {result.best_val_loss:.4f} "
        f"({result.best_val_bpc:.4f} bits/char) at step {result.best_step} | {speed} | "
        f"peak {result.peak_memory_mb:,.0f} MB"
    )
    if result.stopped == "early_stop":
        print(f"early stop: no new best val loss in {cfg.early_stop} evaluations")
    print(f"loss curves: {_plot([cfg.run_dir])[0]}")
    if result.stopped == "interrupted":
        print(
            f"stopped by {result.signal}: latest/ saved at step {result.step}. "
            f"Resume with: {_resume_command(cfg)}",
            file=sys.stderr,
        )
        raise typer.Exit(result.exit_code)


def _gflops(matmul, n: int, repeats: int = 10) -> float:
    import time

    matmul()
    start = time.perf_counter()
    for _ in range(repeats):
        matmul()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


@app.command("info")
@user_errors
def info_command(threads: Annotated[int, _threads_option()] = 0) -> None:
    """Versions, device, the BLAS in use and a measured matmul speed (MLX against numpy)."""
    import os
    import platform

    import mlx.core as mx
    import numpy as np

    from mlx_gpt import __version__, linux_blas

    apply_threads(threads)
    print(f"mlx-gpt {__version__} | mlx {mx.__version__} | numpy {np.__version__}")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(environment_line())
    if sys.platform.startswith("linux"):
        print(f"cblas_sgemm from: {linux_blas.sgemm_provider() or 'MLX bundled BLAS'}")
        status = linux_blas.status
        if status.problem:
            print(f"warning: {linux_blas.warning()}")
        if status.detail:
            print(status.detail.rstrip())
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            print(f"{var}={os.environ[var]}")
    n = 1024
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    a_np, b_np = np.array(a), np.array(b)
    mlx_speed = _gflops(lambda: mx.eval(a @ b), n)
    numpy_speed = _gflops(lambda: a_np @ b_np, n)
    print(
        f"matmul {n}x{n} fp32: MLX {mlx_speed:.1f} GFLOP/s, numpy {numpy_speed:.1f} GFLOP/s "
        f"(MLX at {mlx_speed / numpy_speed:.2f}x numpy)"
    )


GENERATE_HELP = """Stream Shakespeare-like text from a trained run.

The text (prompt, then the generated text) goes to stdout as it is produced; a summary
(tokens, characters, tokens/sec, peak memory) goes to stderr. A token is a character
for a char run, a piece of a word for a BPE run (the tokenizer is the run's own); a
character cut between two byte-level tokens is printed once it is whole.

**Windows.** The model knows block_size positions. `--window exact` conditions every
token on the last block_size tokens with a full forward pass, as gpt.py does.
`--window fast` (default) keeps a key/value cache and, when it is full, rebuilds it from
the last block_size/2 tokens: identical to exact while the text fits in one block,
then each token sees between block_size/2 and block_size tokens of context, for a
fraction of the work.

**Examples**

* `python generate.py --tokens 3000`

* `python generate.py --prompt "ROMEO:" --temperature 0.8 --top-k 20`

* `python generate.py --out-dir out/small --checkpoint latest --num-samples 3`

* `python generate.py --out-dir out/gpt2 --prompt "ROMEO:" --tokens 300` : imported GPT-2
"""


@app.command("generate", help=GENERATE_HELP)
@user_errors
def generate_command(
    tokens: Annotated[
        int, typer.Option(help="Tokens to generate per sample (characters, for a char run).")
    ] = 500,
    out_dir: Annotated[
        str | None,
        typer.Option(help="Run folder. [default: the most recently trained run under out/]"),
    ] = None,
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    prompt: Annotated[
        str,
        typer.Option(help="Text to start from (a char run knows only its own characters)."),
    ] = "",
    prompt_file: Annotated[
        str | None, typer.Option(help="Read the prompt from a UTF-8 file.")
    ] = None,
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature; 0 picks the most likely token.")
    ] = 1.0,
    top_k: Annotated[
        int | None, typer.Option(help="Sample from the k most likely tokens only.")
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(help="Sample from the smallest set whose probability reaches p (0, 1]."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same text.")] = 1337,
    num_samples: Annotated[int, typer.Option(help="Independent samples, one after another.")] = 1,
    output: Annotated[
        str | None, typer.Option(help="Write the text to this file instead of stdout.")
    ] = None,
    window: Annotated[str, typer.Option(help="fast (KV cache) or exact (gpt.py).")] = "fast",
    dtype: Annotated[str | None, cli_import.DTYPE] = None,
    threads: Annotated[int, _threads_option()] = 0,
) -> None:
    from mlx_gpt.data import load_text
    from mlx_gpt.generation import stream_generate
    from mlx_gpt.importing import default_dtype, set_dtype
    from mlx_gpt.run import RunFolder, latest_run
    from mlx_gpt.sampling import Sampler

    # --tokens, --window and the sampling settings are checked by the library, before
    # anything is printed; these are the command line's own.
    checks = [
        (num_samples >= 1, "--num-samples must be at least 1"),
        (not (prompt and prompt_file), "give --prompt or --prompt-file, not both"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    apply_threads(threads)
    if prompt_file:
        prompt = load_text(prompt_file, flag="--prompt-file")
    run = RunFolder(out_dir) if out_dir else latest_run()
    if not run.path.is_dir():
        raise UserError(f"no run folder {run.path}; train one first with `python train.py`")
    model, tokenizer = run.load_model(checkpoint)
    set_dtype(model, dtype or default_dtype())
    stream = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        for i in range(num_samples):
            sampler = Sampler(temperature, top_k, top_p, seed + i)
            pieces = stream_generate(model, tokenizer, prompt, tokens, sampler, window)
            if i:
                stream.write("\n---------------\n")
            stream.write(prompt)
            chars = 0
            for r in pieces:
                stream.write(r.text)
                chars += len(r.text)
                if r.generated % 16 == 0 or r.text.endswith("\n"):
                    stream.flush()
            stream.flush()
            amount = f"{r.generated} characters"
            if tokenizer.kind != "char":
                amount = f"{r.generated} tokens ({chars} characters)"
            print(
                f"\n[{run.path}/{checkpoint}, window {window}] {amount}, "
                f"{r.tokens_per_sec:,.0f} tok/s, peak {r.peak_memory_mb:,.0f} MB",
                file=sys.stderr,
            )
    finally:
        if output:
            stream.close()
    blas_warning()


@app.command("plot")
@user_errors
def plot_command(
    runs: Annotated[list[str], typer.Argument(help="Run folders (out/PRESET ...).")],
    output: Annotated[
        str | None,
        typer.Option(help="Image file. [default: RUN/loss.png; needed for several runs]"),
    ] = None,
    svg: Annotated[bool, typer.Option("--svg", help="Also write an SVG beside the PNG.")] = False,
    metric: Annotated[
        str,
        typer.Option(
            help="loss (per token) or bpc (bits per character: compares char and BPE runs)."
        ),
    ] = "loss",
    x: Annotated[str, typer.Option("--x", help="step, or time (minutes of training).")] = "step",
) -> None:
    """Draw train/val loss, the best val step, the overfitting region and the gap.

    Works while a run is still training. Several runs overlay in one figure:
    `python -m mlx_gpt plot out/small out/tiny --output compare.png`;
    a char and a BPE run at equal time:
    `python -m mlx_gpt plot out/small out/small-bpe --metric bpc --x time --output bpc.png`
    """
    for path in _plot(runs, output, svg, metric, x):
        print(f"wrote {path}")


def _plot(runs, output=None, svg=False, metric="loss", x="step"):
    """Plot, turning a skipped damaged metrics line into one warning line on stderr."""
    import warnings

    from mlx_gpt.plot import plot_runs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = plot_runs(runs, output, svg, metric, x)
    for w in caught:
        typer.echo(f"warning: {w.message}", err=True)
    return written


def main() -> None:
    app()


def train_main() -> None:
    """`python train.py`: the train command on its own."""
    typer.main.get_command(app).commands["train"].main(prog_name="train.py")


def generate_main() -> None:
    """`python generate.py`: the generate command on its own."""
    typer.main.get_command(app).commands["generate"].main(prog_name="generate.py")
