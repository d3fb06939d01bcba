"""nanoGPT's files: a ckpt.pt as a run folder (`python -m mlx_gpt import nanogpt`), and
its meta.pkl, read with an unpickler that admits plain data only."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_gpt.errors import UserError
from mlx_gpt.model.gpt import GPTConfig
from mlx_gpt.runs.folder import RunFolder
from mlx_gpt.tokenizer import CharTokenizer
from mlx_gpt.weights.importing import cast, write_run


class PlainUnpickler(pickle.Unpickler):
    """Admits plain data only (dicts, lists, strings, numbers): any class or function a
    pickle names, e.g. os.system, is refused before it can be imported or called."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def read_meta(path: str | Path, flag: str = "--meta") -> list[str]:
    """nanoGPT's meta.pkl: the characters, in id order (itos). `flag` names where the
    path came from, for the error message."""
    try:
        meta = PlainUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except FileNotFoundError:
        raise UserError(f"{flag} {path} does not exist") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(
            f"{flag} {path} is refused: a meta.pkl may hold plain dicts, strings and ints "
            f"only ({e})"
        ) from None
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or not all(
        isinstance(k, int) and isinstance(v, str) for k, v in itos.items()
    ):
        raise UserError(f"{flag} {path} has no itos table (id -> character)")
    return [itos[i] for i in sorted(itos)]


def nanogpt_config(model_args: dict[str, Any]) -> GPTConfig:
    """nanoGPT's GPT: exact GELU, tied embeddings, biases (c_attn's too) as `bias` says."""
    bias = bool(model_args.get("bias", True))
    return GPTConfig(
        vocab_size=int(model_args["vocab_size"]),
        block_size=int(model_args["block_size"]),
        n_layer=int(model_args["n_layer"]),
        n_head=int(model_args["n_head"]),
        n_embd=int(model_args["n_embd"]),
        dropout=0.0,
        activation="gelu",
        qkv_bias=bias,
        bias=bias,
        tie_embeddings=True,
    )


def nanogpt_weights(state: dict[str, Any]) -> dict[str, mx.array]:
    """nanoGPT's state dict -> ours: strip `_orig_mod.` (torch.compile) and `transformer.`,
    drop the tied lm_head and the causal-mask buffers. nn.Linear is (out, in) in both."""
    import numpy as np

    out = {}
    for name, tensor in state.items():
        name = name.removeprefix("_orig_mod.").removeprefix("transformer.")
        if name == "lm_head.weight" or name.endswith(".attn.bias"):
            continue
        out[name] = mx.array(tensor.detach().float().cpu().numpy().astype(np.float32))
    return out


def import_nanogpt(
    ckpt: str | Path,
    out_dir: str | Path,
    meta: str | Path | None = None,
    vocab_text: str | Path | None = None,
    dtype: str | None = None,
    tokenizer_path: str | None = None,
) -> RunFolder:
    """A nanoGPT ckpt.pt as a run folder. Its tokens are characters (`meta`, or the
    sorted characters of `vocab_text`) or GPT-2's (`tokenizer_path`: its files, or a hub
    name), which a model trained from scratch pads to 50,304 rows."""
    try:
        import torch
    except ImportError:
        raise UserError(
            "reading a ckpt.pt needs PyTorch: pip install 'mlx-gpt[bench]' (or torch==2.13.0)"
        ) from None
    if not Path(ckpt).is_file():
        raise UserError(f"{ckpt} does not exist; give the path of nanoGPT's ckpt.pt")
    if sum(x is not None for x in (meta, vocab_text, tokenizer_path)) != 1:
        raise UserError(
            "say what its tokens are (one of): --meta meta.pkl or --vocab-text FILE for "
            "characters, --tokenizer-path gpt2 (or a folder of its files) for GPT-2's"
        )
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        raise UserError(f"{ckpt} is not a checkpoint torch.load can read safely ({e})") from None
    if not isinstance(saved, dict) or "model_args" not in saved or "model" not in saved:
        raise UserError(f"{ckpt} has no model_args (or no model): is it nanoGPT's ckpt.pt?")
    config = nanogpt_config(saved["model_args"])
    weights = nanogpt_weights(saved["model"])
    source = f"nanogpt:{ckpt}"
    if tokenizer_path is not None:
        from mlx_gpt.tokenizer import BPETokenizer

        tokenizer = BPETokenizer.gpt2(tokenizer_path)
        return write_run(out_dir, config, cast(weights, dtype), tokenizer, source)
    if meta is not None:
        chars = read_meta(meta)
    else:
        from mlx_gpt.data.text import load_text

        chars = sorted(set(load_text(vocab_text, flag="--vocab-text")))
    if len(chars) != config.vocab_size:
        raise UserError(
            f"the checkpoint has {config.vocab_size} tokens but the vocabulary given has "
            f"{len(chars)} characters; give the meta.pkl of the same dataset"
        )
    return write_run(out_dir, config, cast(weights, dtype), CharTokenizer(chars), source)
