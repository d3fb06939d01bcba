"""`python -m mlx_gpt eval hellaswag RUN --data hellaswag_val.jsonl`: judge a model."""

from __future__ import annotations

from typing import Annotated

import typer

from mlx_gpt.cli.common import DTYPE, apply_threads, progress_report, threads_option, user_errors

app = typer.Typer(
    help="Judge a trained or imported model on a benchmark.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


@app.command("hellaswag")
@user_errors
def hellaswag_command(
    run: Annotated[str, typer.Argument(help="Run folder (trained, or imported GPT-2/nanoGPT).")],
    data: Annotated[
        str, typer.Option(help="hellaswag_val.jsonl (10,042 examples: ctx, endings, label).")
    ],
    limit: Annotated[int | None, typer.Option(help="Only the first N examples.")] = None,
    checkpoint: Annotated[str, typer.Option(help="best or latest.")] = "best",
    batch: Annotated[int, typer.Option(help="Examples per forward pass (4 rows each).")] = 8,
    tokenizer_path: Annotated[
        str | None, typer.Option(help="GPT-2's tokenizer files, for a run that saved none.")
    ] = None,
    dtype: Annotated[str | None, DTYPE] = None,
    threads: Annotated[int, threads_option()] = 0,
) -> None:
    """HellaSwag as build-nanogpt's hellaswag.py scores it: acc_norm is the ending with
    the lowest mean loss per token (GPT-2 124M: 0.2955), acc the lowest sum. Not the
    Eleuther harness's acc_norm (per character on cleaned text, GPT-2 124M: 0.3114);
    acc_norm_chars is its per-character rule on the raw text. Under mlx.launch the
    ranks split the examples.

    Get the file: https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl
    """
    from mlx_gpt.distributed import ranks as distributed
    from mlx_gpt.errors import UserError
    from mlx_gpt.evals.hellaswag import evaluate, read_examples
    from mlx_gpt.machine.dtypes import default_dtype, set_dtype
    from mlx_gpt.runs.folder import RunFolder

    if batch < 1 or (limit is not None and limit < 1):
        raise UserError("--batch and --limit must be at least 1")
    apply_threads(threads)
    examples = read_examples(data, limit)
    folder = RunFolder(run)
    if not folder.path.is_dir():
        raise UserError(f"no run folder {folder.path}; train or import one first")
    model, tokenizer = folder.load_model(checkpoint, tokenizer_path)
    set_dtype(model, dtype or default_dtype())
    ranks = distributed.init()
    if ranks.main:  # each rank's share is the same size, so rank 0's tells the time left
        with progress_report("hellaswag") as report:
            result = evaluate(model, tokenizer, examples, ranks, batch, report)
    else:
        result = evaluate(model, tokenizer, examples, ranks, batch)
    if ranks.main:
        print(
            f"hellaswag {result.examples:,} examples | acc {result.acc:.4f} | "
            f"acc_norm {result.acc_norm:.4f} (build-nanogpt's: per token) | "
            f"acc_norm_chars {result.acc_norm_chars:.4f} (Eleuther's: per character) | "
            f"{result.examples_per_sec:,.1f} examples/s"
        )
