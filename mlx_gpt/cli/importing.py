"""`python -m mlx_gpt import gpt2|nanogpt`: weights from elsewhere into a run folder."""

from __future__ import annotations

from typing import Annotated

import typer

from mlx_gpt.cli.common import DTYPE, user_errors

app = typer.Typer(
    help="Bring weights in as a run folder: GPT-2 from Hugging Face, or a nanoGPT ckpt.pt. "
    "generate.py and train.py --init-from then use it like a trained run.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

OUT_DIR = typer.Option(help="Run folder to create.")


@app.command("gpt2")
@user_errors
def gpt2_command(
    source: Annotated[
        str,
        typer.Argument(
            help="A hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl) or a local folder in "
            "Hugging Face layout (config.json, model.safetensors, tokenizer files)."
        ),
    ] = "gpt2",
    out_dir: Annotated[str, OUT_DIR] = "out/gpt2",
    dtype: Annotated[str | None, DTYPE] = None,
) -> None:
    """GPT-2 from Hugging Face: `python -m mlx_gpt import gpt2 --out-dir out/gpt2`.

    Reads model.safetensors without torch. A hub name is fetched with huggingface_hub
    (the config, the weights and the tokenizer files only) or found in its cache.
    """
    from mlx_gpt.machine.dtypes import default_dtype
    from mlx_gpt.weights.importing import import_gpt2

    _report(import_gpt2(source, out_dir, dtype or default_dtype()))


@app.command("nanogpt")
@user_errors
def nanogpt_command(
    ckpt: Annotated[str, typer.Argument(help="nanoGPT's ckpt.pt.")],
    meta: Annotated[
        str | None,
        typer.Option(help="nanoGPT's meta.pkl (stoi/itos) for the characters; plain data only."),
    ] = None,
    vocab_text: Annotated[
        str | None,
        typer.Option(help="Or: the training text, whose sorted characters are the vocabulary."),
    ] = None,
    tokenizer_path: Annotated[
        str | None,
        typer.Option(
            help="Or, for a checkpoint on GPT-2 tokens (OpenWebText, a fine-tune of gpt2): "
            "GPT-2's tokenizer, a folder with tokenizer.json or vocab.json + merges.txt, "
            "or the hub name gpt2."
        ),
    ] = None,
    out_dir: Annotated[str, OUT_DIR] = "out/nanogpt",
    dtype: Annotated[str | None, DTYPE] = None,
) -> None:
    """A nanoGPT checkpoint: shakespeare_char's out/ckpt.pt (characters), or one trained
    on GPT-2 tokens, whose 50,304 rows (GPT-2's 50,257, padded) are kept. Needs torch
    (the bench extra) to read it, with weights_only=True."""
    from mlx_gpt.machine.dtypes import default_dtype
    from mlx_gpt.weights.nanogpt import import_nanogpt

    dtype = dtype or default_dtype()
    _report(import_nanogpt(ckpt, out_dir, meta, vocab_text, dtype, tokenizer_path))


def _report(run) -> None:
    from mlx_gpt.model.gpt import GPT

    config = run.model_config()
    params = GPT(config).num_params()
    print(
        f"wrote {run.path}/: {params:,} parameters, {config.n_layer} layers, "
        f"block {config.block_size}, vocab {config.vocab_size}"
    )
    print(f"sample:    python generate.py --out-dir {run.path} --tokens 200")
    print(f"fine-tune: python train.py --init-from {run.path} --data TEXT --out-dir out/ft")
