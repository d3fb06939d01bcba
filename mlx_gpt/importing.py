"""Weights from elsewhere, as ordinary run folders: GPT-2 in Hugging Face's layout, and
nanoGPT's ckpt.pt.

    python -m mlx_gpt import gpt2 [SOURCE] --out-dir out/gpt2
    python -m mlx_gpt import nanogpt ckpt.pt --meta meta.pkl --out-dir out/nano

The folder gets config.json (with a `source` field), the tokenizer, and best/ and
latest/ holding the weights (latest/ as hard links to best/'s files where the file
system allows: one copy on disk). generate.py and --init-from read it like a trained
run; it has no optimizer state, so it is fine-tuned (--init-from), never resumed.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_gpt import checkpoint, hub
from mlx_gpt.config import MODEL_FIELDS, TrainConfig
from mlx_gpt.errors import UserError
from mlx_gpt.model import GPT, GPTConfig, weights_dtype
from mlx_gpt.run import RunFolder
from mlx_gpt.tokenizer import BPETokenizer, CharTokenizer, Tokenizer

# Hugging Face's activation_function names -> ours
HF_ACTIVATIONS = {
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu": "gelu",
    "relu": "relu",
}
HF_FILES = ["config.json", "model.safetensors", "tokenizer.json", "vocab.json", "merges.txt"]
LOCAL_HINT = (
    "download the model's folder (config.json, model.safetensors, tokenizer.json) elsewhere "
    "and pass its path: python -m mlx_gpt import gpt2 PATH"
)


def cast(weights: dict[str, mx.array], dtype: str | None) -> dict[str, mx.array]:
    if dtype is None:
        return weights
    return {k: v.astype(weights_dtype(dtype)) for k, v in weights.items()}


# ---- GPT-2 from Hugging Face ----


def hf_folder(source: str) -> Path:
    """A local folder in Hugging Face layout, or the hub snapshot of a name like gpt2."""
    path = hub.local_or_fetch(source, HF_FILES, LOCAL_HINT)
    if not path.is_dir():
        raise UserError(f"{source} is not a folder; give a model folder or a hub name (gpt2)")
    return path


def gpt2_config(hf: dict[str, Any], where: Path) -> GPTConfig:
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        raise UserError(
            f"{where} describes a {model_type!r} model, not GPT-2; `import gpt2` reads GPT-2 only"
        )
    activation = hf.get("activation_function", "gelu_new")
    if activation not in HF_ACTIVATIONS:
        raise UserError(f"{where}: activation_function {activation!r} is not one mlx-gpt has")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        block_size=hf.get("n_positions") or hf["n_ctx"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        dropout=0.0,
        activation=HF_ACTIVATIONS[activation],
        qkv_bias=True,
        bias=True,
        tie_embeddings=hf.get("tie_word_embeddings", True),
        norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    )


def gpt2_weights(raw: dict[str, mx.array], tied: bool) -> dict[str, mx.array]:
    """Hugging Face GPT-2 names -> ours: drop the `transformer.` prefix and the causal-mask
    buffers; transpose Conv1D's (in, out) matrices to Linear's (out, in)."""
    out = {}
    for name, w in raw.items():
        name = name.removeprefix("transformer.")
        if name.endswith((".attn.bias", ".attn.masked_bias")) or (
            tied and name == "lm_head.weight"
        ):
            continue
        if name.startswith("h.") and name.endswith(".weight") and w.ndim == 2:
            w = w.T  # Conv1D: x @ W with W (in, out)
        out[name] = w
    return out


def import_gpt2(source: str, out_dir: str | Path, dtype: str | None = None) -> RunFolder:
    folder = hf_folder(source)
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    if not weights_file.is_file():
        raise UserError(
            f"{folder} has no model.safetensors; save the model with "
            "save_pretrained(..., safe_serialization=True), or pass a hub name"
        )
    if not config_file.is_file():
        raise UserError(f"{folder} has no config.json; is it a Hugging Face model folder?")
    try:
        hf = json.loads(config_file.read_text())
    except ValueError as e:
        raise UserError(f"{config_file} is not valid JSON ({e})") from None
    config = gpt2_config(hf, config_file)
    tokenizer = BPETokenizer.gpt2(str(folder))
    weights = gpt2_weights(_load_safetensors(weights_file), config.tie_embeddings)
    return write_run(out_dir, config, cast(weights, dtype), tokenizer, f"huggingface:{source}")


def _load_safetensors(file: Path) -> dict[str, mx.array]:
    try:
        return mx.load(str(file))  # lazy: tensors are read when used, in their stored dtype
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{file} is not a readable safetensors file ({e})") from None


# ---- nanoGPT's ckpt.pt ----


class PlainUnpickler(pickle.Unpickler):
    """Admits plain data only (dicts, lists, strings, numbers): any class or function a
    pickle names, e.g. os.system, is refused before it can be imported or called."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it asks for {module}.{name}")


def read_meta(path: str | Path) -> list[str]:
    """nanoGPT's meta.pkl: the characters, in id order (itos)."""
    try:
        meta = PlainUnpickler(io.BytesIO(Path(path).read_bytes())).load()
    except FileNotFoundError:
        raise UserError(f"--meta {path} does not exist") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise UserError(
            f"--meta {path} is refused: a meta.pkl may hold plain dicts, strings and ints "
            f"only ({e})"
        ) from None
    itos = meta.get("itos") if isinstance(meta, dict) else None
    if not isinstance(itos, dict) or not all(
        isinstance(k, int) and isinstance(v, str) for k, v in itos.items()
    ):
        raise UserError(f"--meta {path} has no itos table (id -> character)")
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
) -> RunFolder:
    try:
        import torch
    except ImportError:
        raise UserError(
            "reading a ckpt.pt needs PyTorch: pip install 'mlx-gpt[bench]' (or torch==2.13.0)"
        ) from None
    if not Path(ckpt).is_file():
        raise UserError(f"{ckpt} does not exist; give the path of nanoGPT's ckpt.pt")
    if (meta is None) == (vocab_text is None):
        raise UserError("give the characters with --meta meta.pkl or --vocab-text FILE (one)")
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not a checkpoint
        raise UserError(f"{ckpt} is not a checkpoint torch.load can read safely ({e})") from None
    if not isinstance(saved, dict) or "model_args" not in saved or "model" not in saved:
        raise UserError(f"{ckpt} has no model_args (or no model): is it nanoGPT's ckpt.pt?")
    config = nanogpt_config(saved["model_args"])
    if meta is not None:
        chars = read_meta(meta)
    else:
        from mlx_gpt.data import load_text

        chars = sorted(set(load_text(vocab_text, flag="--vocab-text")))
    if len(chars) != config.vocab_size:
        raise UserError(
            f"the checkpoint has {config.vocab_size} tokens but the vocabulary given has "
            f"{len(chars)} characters; give the meta.pkl of the same dataset"
        )
    weights = nanogpt_weights(saved["model"])
    return write_run(out_dir, config, cast(weights, dtype), CharTokenizer(chars), f"nanogpt:{ckpt}")


# ---- the run folder ----


def write_run(
    out_dir: str | Path,
    config: GPTConfig,
    weights: dict[str, mx.array],
    tokenizer: Tokenizer,
    source: str,
) -> RunFolder:
    """Check the weights against the model, then write the run folder."""
    if config.vocab_size != tokenizer.vocab_size:
        raise UserError(
            f"the weights have {config.vocab_size} tokens, the tokenizer {tokenizer.vocab_size}"
        )
    run = RunFolder(out_dir)
    run.check_new("choose another --out-dir")
    model = GPT(config)  # lazy: its random init is never computed
    try:
        model.load_weights(list(weights.items()), strict=True)
    except ValueError as e:
        raise UserError(f"the weights do not fit the model their config describes ({e})") from None
    run.path.mkdir(parents=True, exist_ok=True)
    tokenizer.save(run.path)
    kind = tokenizer.kind if tokenizer.kind != "bpe" else "gpt2"
    train = TrainConfig(
        preset="imported",
        out_dir=str(run.path),
        tokenizer=kind,
        **{k: getattr(config, k) for k in MODEL_FIELDS},
    )
    state = {"step": 0, "best_val_loss": None, "best_step": -1, "source": source}
    checkpoint.save(run.best, model, None, state)
    _link_or_copy(run.best, run.latest)
    run.write_config(train, config, sys.argv, source=source)
    return run


def _link_or_copy(src: Path, dst: Path) -> None:
    """dst/ with src/'s files: hard links (no second copy on disk) where possible."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in src.iterdir():
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    tmp.rename(dst)
