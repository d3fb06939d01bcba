"""`python generate.py`: stream text from a trained (or imported) run."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mlx_gpt.cli.common import DTYPE, apply_threads, blas_warning, say, threads_option, user_errors
from mlx_gpt.errors import UserError

HELP = """Stream Shakespeare-like text from a trained run.

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


# What each --window does, in the words the summary line uses.
WINDOW_WORDS = {
    "fast": "KV cache, refilled from the last half block when full",
    "exact": "a full forward pass over the last block per token, as gpt.py",
}


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
    dtype: Annotated[str | None, DTYPE] = None,
    tokenizer_path: Annotated[
        str | None,
        typer.Option(
            help="GPT-2's tokenizer files (a folder or hub name), for a run trained on GPT-2 "
            "ids that saved no tokenizer."
        ),
    ] = None,
    threads: Annotated[int, threads_option()] = 0,
) -> None:
    from mlx_gpt.data.text import load_text
    from mlx_gpt.generation.decoding import stream_generate
    from mlx_gpt.generation.sampling import Sampler
    from mlx_gpt.machine.dtypes import default_dtype, dtype_of, set_dtype
    from mlx_gpt.runs.folder import RunFolder, latest_run

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
    model, tokenizer = run.load_model(checkpoint, tokenizer_path)
    trained = trained_as(run, checkpoint)
    set_dtype(model, dtype or default_dtype())
    held = f"{dtype_of(model)} weights"  # what the model holds, whatever was asked
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
            say(
                f"\n[{run.path}/{checkpoint}, {trained}, {WINDOW_WORDS[window]}, {held}] {amount}, "
                f"{r.tokens_per_sec:,.0f} tok/s, peak {r.peak_memory_mb:,.0f} MB"
            )
    finally:
        if output:
            stream.close()
    blas_warning()


def trained_as(run, which: str) -> str:
    """What the checkpoint is, for the summary: its step and best val loss, or where
    imported weights came from. A step-0 checkpoint of a trained run is the untrained
    model (random text): that gets a warning line first."""
    from mlx_gpt.runs import checkpoint

    state = checkpoint.load_state(run.checkpoint(which))
    if source := state.get("source"):
        return f"imported from {source}"
    best = state.get("best_val_loss")
    loss = f", best val loss {best:.4f}" if isinstance(best, float) and best < float("inf") else ""
    if state.get("step", 0) == 0:
        say(
            f"warning: {run.path}/{which} is the untrained model of step 0: its text is random "
            f"characters; train longer (python train.py --out-dir {run.path} --resume)"
        )
    return f"step {state.get('step', 0)}{loss}"
