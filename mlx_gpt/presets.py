"""The presets: named sets of TrainConfig values (`train.py --preset NAME`), each a plain
dict of field names built on the ones before it. Anything a preset sets, a flag or a
`--config` file overrides (settings.py)."""

from __future__ import annotations

from typing import Any

from mlx_gpt.config import ARCHITECTURES, TrainConfig
from mlx_gpt.errors import UserError

# gpt.py, exactly (the TrainConfig defaults).
_LECTURE: dict[str, Any] = {}

# nanoGPT's config/train_shakespeare_char.py optimizer recipe on the lecture's model.
_NANOGPT: dict[str, Any] = dict(
    learning_rate=1e-3,
    warmup_iters=100,
    lr_decay_iters=5000,
    min_lr=1e-4,
    beta2=0.99,
    weight_decay=0.1,
    decay_matrices_only=True,
    grad_clip=1.0,
    eval_interval=250,
)

# GPT-2's architecture choices (gpt2, lecture-bpe).
_GPT2_OPTIONS: dict[str, Any] = dict(activation="gelu_tanh", qkv_bias=True, tie_embeddings=True)

# nanoGPT's README recipe for a MacBook CPU (val ~1.88 after 2000 steps).
_SMALL: dict[str, Any] = {
    **_NANOGPT,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
    "block_size": 64,
    "batch_size": 12,
    "dropout": 0.0,
    "max_iters": 2000,
    "lr_decay_iters": 2000,
    "eval_iters": 20,
}

# The speedrun's optimizer (modded-nanogpt's track 3, records/track_3_optimization/
# train_gpt_simple.py): Muon for the blocks' matrices, AdamW at per-group rates for the
# rest, all on one stable-then-decay schedule with no warm-up and no clipping.
_SPEEDRUN_OPTIM: dict[str, Any] = dict(
    optimizer="muon",
    matrix_lr=0.025,
    muon_momentum=0.95,
    muon_weight_decay=0.05,
    embedding_lr=0.7,
    unembedding_lr=0.004,
    scalar_lr=0.015,
    beta1=0.8,
    beta2=0.95,
    eps=1e-10,
    weight_decay=0.001,
    decay_matrices_only=False,
    grad_clip=0.0,
    schedule="wsd",
    cooldown_frac=0.7,
    warmup_iters=0,
)

PRESETS: dict[str, dict[str, Any]] = {
    "lecture": _LECTURE,
    "nanogpt": _NANOGPT,
    # The lecture's size and recipe on 1024 BPE tokens, with GPT-2's options.
    "lecture-bpe": {**_GPT2_OPTIONS, "tokenizer": "bpe", "vocab_size": 1024},
    # GPT-2 small (124M) on build-nanogpt's train_gpt2.py recipe (README compares them
    # value by value): 524,288 tokens a step as 512 x 1024, micro-batches sized to the
    # machine, bf16 where it is fast.
    "gpt2": {
        **_NANOGPT,
        **_GPT2_OPTIONS,
        "tokenizer": "gpt2",
        "vocab_multiple": 64,  # 50,304 rows, as build-nanogpt's GPTConfig(vocab_size=50304)
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
        "block_size": 1024,
        "dropout": 0.0,
        "batch_size": 512,
        "micro_batch": "auto",
        "learning_rate": 6e-4,
        "min_lr": 6e-5,
        "warmup_iters": 715,
        "warmup_rule": "build-nanogpt",
        "max_iters": 19_073,
        "lr_decay_iters": 19_073,
        "beta2": 0.95,
        "eval_interval": 250,
        "eval_iters": 20,
        "dtype": "auto",
    },
    "small": _SMALL,
    # small's size, batch and data with the modern block, Muon and wsd, tuned (bench/
    # recipes.py) for the fewest steps to small's best val loss.
    "small-speedrun": {
        **_SMALL,
        **ARCHITECTURES["modern"],
        **_SPEEDRUN_OPTIM,
        "max_iters": 550,
        "lr_decay_iters": 0,
        "matrix_lr": 0.02,
        "embedding_lr": 0.1,
        "unembedding_lr": 0.008,
        "cooldown_frac": 0.8,
    },
    # GPT-2 small's size on track 3's train_gpt_simple.py (val 3.2787 on FineWeb at 3,250
    # steps of 524,288 tokens, 1.70B tokens): its block, with biases, norm gains, six
    # heads of 128 and its fixed attention scale; its optimizer and schedule. Not its
    # FlexAttention or FP8; our prepared shards and micro-batches, HellaSwag as gpt2.
    "gpt2-speedrun": {
        **ARCHITECTURES["modern"],
        **_SPEEDRUN_OPTIM,
        "tokenizer": "gpt2",
        "vocab_multiple": 64,
        "n_layer": 12,
        "n_head": 6,
        "n_embd": 768,
        "block_size": 1024,
        "dropout": 0.0,
        "bias": True,
        "qkv_bias": True,
        "norm_gains": True,
        "attn_scale": 0.12,
        "batch_size": 512,
        "micro_batch": "auto",
        "max_iters": 3250,
        "eval_interval": 125,
        "eval_iters": 20,
        "dtype": "auto",
    },
    # small's model on a tenth of tiny Shakespeare: val loss bottoms out near step 2100
    # and turns back up while train loss keeps falling, in minutes on a laptop CPU.
    "overfit": {
        **_SMALL,
        "data_chars": 100_000,
        "max_iters": 3000,
        "lr_decay_iters": 3000,
        "eval_interval": 100,
    },
    # Seconds, not minutes: smoke tests and trying the tools. Dropout stays on so that
    # resume is tested with randomness in the step.
    "tiny": {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "block_size": 32,
        "batch_size": 8,
        "dropout": 0.1,
        "learning_rate": 1e-3,
        "min_lr": 1e-3,
        "max_iters": 100,
        "eval_interval": 25,
        "eval_iters": 5,
        "log_interval": 5,
    },
    # nanoGPT's finetune_shakespeare.py: a few small steps from a run's weights
    # (--init-from), at a constant low rate. Its block size is the source's.
    "finetune": {
        **_NANOGPT,
        "learning_rate": 3e-5,
        "min_lr": 3e-5,
        "warmup_iters": 0,
        "lr_decay_iters": 0,
        "beta2": 0.95,
        "dropout": 0.0,
        "batch_size": 32,
        "grad_accum": 32,  # one sequence at a time, as nanoGPT
        "max_iters": 20,
        "eval_interval": 5,
        "eval_iters": 40,
        "log_interval": 1,
    },
}


def preset_config(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name], "preset": name})
