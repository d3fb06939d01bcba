"""Weights from elsewhere, as ordinary run folders: GPT-2 in Hugging Face's layout here,
and nanoGPT's ckpt.pt (nanogpt.py).

    python -m mlx_gpt import gpt2 [SOURCE] --out-dir out/gpt2
    python -m mlx_gpt import nanogpt ckpt.pt --meta meta.pkl --out-dir out/nano

The folder gets config.json (with a `source` field), the tokenizer, and best/ and
latest/ holding the weights (latest/ as hard links to best/'s files where the file
system allows: one copy on disk). generate.py and --init-from read it like a trained
run; it has no optimizer state, so it is fine-tuned (--init-from), never resumed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx

from mlx_gpt.config import MODEL_FIELDS, TrainConfig
from mlx_gpt.errors import UserError
from mlx_gpt.machine.dtypes import weights_dtype
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.runs import checkpoint
from mlx_gpt.runs.folder import RunFolder
from mlx_gpt.tokenizer import BPETokenizer, Tokenizer
from mlx_gpt.weights import hub

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
        return mx.load(str(file))  # lazily: tensors are read when used, in their stored dtype
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{file} is not a readable safetensors file ({e})") from None


# ---- the run folder ----


def write_run(
    out_dir: str | Path,
    config: GPTConfig,
    weights: dict[str, mx.array],
    tokenizer: Tokenizer,
    source: str,
) -> RunFolder:
    """Check the weights against the model, then write the run folder."""
    if config.vocab_size < tokenizer.vocab_size:  # more rows are padding, as nanoGPT's 50,304
        raise UserError(
            f"the weights have {config.vocab_size} tokens, fewer than the tokenizer's "
            f"{tokenizer.vocab_size}; give the tokenizer the weights were trained with"
        )
    run = RunFolder(out_dir)
    run.check_new("choose another --out-dir")
    model = GPT(config)  # lazily built, so its random init is never computed
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
