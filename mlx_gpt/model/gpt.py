"""The lecture's GPT ("Let's build GPT", gpt.py) in mlx.nn, with GPT-2 parameter names.

Differences from gpt.py are in form only: the per-head key/query/value Linears are one
fused `c_attn` projection (the same maths), and the model can run with a key/value
cache for generation. The model returns logits and does no I/O.

Four options turn the lecture's model into GPT-2's (the defaults are the lecture's):
`activation` gelu_tanh, `qkv_bias`, `tie_embeddings` (lm_head reads wte's matrix), and,
as nanoGPT offers, `bias=False` for no bias anywhere.

`architecture="modern"` is the block of modded-nanogpt's speedrun and nanochat: rotary
position embeddings instead of the position table (rope.py), RMSNorm instead of
LayerNorm, also right after the embedding, and the speedrun's init. The rest of that
block is one line each and so one option each, which the modern architecture turns on
(config.py): `qk_norm`, `activation` relu2, `bias=False`, `zero_init`, an untied head and
`softcap`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.utils import checkpoint

from mlx_gpt.model.activations import ACTIVATIONS
from mlx_gpt.model.attention import CHUNK, causal_attention
from mlx_gpt.model.linear import Linear
from mlx_gpt.model.rope import rotate


class ConfigDict:
    """One `from_dict` for every config dataclass (GPTConfig here, TrainConfig in
    config.py), as mlx-lm's BaseModelArgs: keys this version does not know are ignored,
    so that a config.json written by an older or newer version still loads."""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class GPTConfig(ConfigDict):
    vocab_size: int = 65
    block_size: int = 256  # the longest context the model sees (learned positions)
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.2
    activation: str = "relu"  # relu (the lecture), gelu (exact, nanoGPT), gelu_tanh (GPT-2)
    qkv_bias: bool = False  # a bias on c_attn: GPT-2 has one, the lecture's heads do not
    bias: bool = True  # False: no bias in any Linear or LayerNorm (nanoGPT's bias=False)
    tie_embeddings: bool = False  # lm_head is wte's matrix, without a bias (GPT-2)
    norm_eps: float = 1e-5  # LayerNorm epsilon (GPT-2's layer_norm_epsilon)
    architecture: str = "gpt2"  # gpt2: learned positions and LayerNorm; modern: see above
    qk_norm: bool = False  # RMSNorm each head's queries and keys before attention
    softcap: float = 0.0  # logits become cap * z / sqrt(z^2 + cap^2), as the speedrun; 0: off
    zero_init: bool = False  # output projections (attention's, the MLP's, lm_head) start at 0
    norm_gains: bool = False  # the modern RMSNorm learns a gain per channel (track 3's)
    attn_scale: float = 0.0  # scores are q.k times this; 0: 1/sqrt(head_size)

    @property
    def modern(self) -> bool:
        return self.architecture == "modern"


class KVCache:
    """Keys and values of one layer, preallocated for `max_len` positions.

    The write position is an array, not a Python int, and attention always reads all
    max_len slots with the unfilled ones masked: every one-token step then has the same
    shapes, so generation compiles it once (mlx_gpt.generation.decoding).
    """

    def __init__(
        self, batch: int, n_head: int, max_len: int, head_size: int, dtype: mx.Dtype = mx.float32
    ):
        keys = mx.zeros((batch, n_head, max_len, head_size), dtype=dtype)
        # One list: a compiled step takes it as input and writes it back as output.
        self.state = [keys, mx.zeros_like(keys), mx.array(0, dtype=mx.int32)]

    def reset(self) -> None:
        """Empty, in place (a compiled step holds on to this state list)."""
        keys = mx.zeros_like(self.state[0])
        self.state[:] = [keys, mx.zeros_like(keys), mx.array(0, dtype=mx.int32)]

    @property
    def offset(self) -> mx.array:
        """Positions filled so far (an int32 scalar array)."""
        return self.state[2]

    def mask(self, t: int) -> mx.array:
        """Additive (t, max_len) mask for t queries written at offset..offset+t-1:
        query i sees keys 0..offset+i; later and unfilled slots get -inf."""
        max_len = self.state[0].shape[2]
        visible = mx.arange(max_len)[None, :] <= (self.offset + mx.arange(t))[:, None]
        mask = mx.where(visible, 0.0, -mx.inf)  # 0 where a key is visible, else -inf
        return mask.astype(self.state[0].dtype)

    def update_and_fetch(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        keys, values, offset = self.state
        start = offset.reshape(1)
        keys = mx.slice_update(keys, k, start, axes=(2,))
        values = mx.slice_update(values, v, start, axes=(2,))
        self.state[:] = [keys, values, offset + k.shape[2]]
        return keys, values  # (B, n_head, max_len, head_size)


def causal_mask(t: int) -> mx.array:
    """Additive mask for t queries over t keys: query i may attend to keys 0..i; the
    rest get -inf (softmax weight 0)."""
    return mx.triu(mx.full((t, t), -mx.inf), k=1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.head_size = config.n_embd // config.n_head
        self.rope, self.qk_norm, self.eps = config.modern, config.qk_norm, config.norm_eps
        self.scale = config.attn_scale or self.head_size**-0.5
        # query, key and value of every head in one matmul; the lecture's heads have no bias
        qkv_bias = config.qkv_bias and config.bias
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=qkv_bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        B, T, C = x.shape
        q, k, v = mx.split(self.c_attn(x), 3, axis=-1)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (
            z.reshape(B, T, self.n_head, self.head_size).transpose(0, 2, 1, 3) for z in (q, k, v)
        )
        if self.qk_norm:  # each head's query and key scaled to unit RMS
            q, k = (mx.fast.rms_norm(z, None, self.eps) for z in (q, k))
        if self.rope:  # positions offset.., read before the cache's update moves it
            pos = (cache.offset if cache is not None else 0) + mx.arange(T)
            q, k = rotate(q, pos), rotate(k, pos)
        if cache is not None:
            mask = cache.mask(T)  # taken before the update, which moves the write position
            k, v = cache.update_and_fetch(k, v)  # (B, n_head, max_len, head_size)
        else:
            # one token sees itself alone; the mask in q's dtype, which bf16 compute needs
            mask = causal_mask(T).astype(q.dtype) if T > 1 else None
        scale = self.scale
        if self.training and self.dropout > 0:
            # gpt.py's explicit form: dropout acts on the attention weights themselves
            att = (q * scale) @ k.transpose(0, 1, 3, 2)  # (B, n_head, T, T or max_len)
            if mask is not None:
                att = att + mask
            att = self.attn_dropout(mx.softmax(att, axis=-1))
            y = att @ v  # (B, n_head, T, head_size)
        elif self.training and cache is None and T > CHUNK:
            # Training at a long block: attention a block of queries at a time, with a
            # backward pass that keeps no (T, T) weights (attention.py).
            y = causal_attention(scale)(q, k, v)
        else:
            y = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        y = y.transpose(0, 2, 1, 3).reshape(B, T, C)  # re-assemble the heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.activation = ACTIVATIONS[config.activation]

    def __call__(self, x: mx.array) -> mx.array:
        return self.dropout(self.c_proj(self.activation(self.c_fc(x))))


class RMSNorm(nn.Module):
    """x / RMS(x), times a learned gain per channel only if `gains` (track 3's RMSNorm
    has one, nanochat's has none)."""

    def __init__(self, dims: int, eps: float, gains: bool):
        super().__init__()
        self.eps = eps
        if gains:
            self.weight = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.rms_norm(x, self.get("weight"), self.eps)


def layer_norm(config: GPTConfig) -> nn.Module:
    """The model's normalization: LayerNorm (GPT-2), or RMSNorm (the modern block)."""
    if config.modern:
        return RMSNorm(config.n_embd, config.norm_eps, config.norm_gains)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: communication (attention), then computation."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = layer_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = layer_norm(config)
        self.mlp = MLP(config)

    def __call__(self, x: mx.array, cache: KVCache | None = None) -> mx.array:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.modern:  # positions come from rotating the queries and keys instead
            self.ln_wte = layer_norm(config)  # the embedding normalized, as the speedrun's
        else:
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.h = [Block(config) for _ in range(config.n_layer)]
        self.ln_f = layer_norm(config)
        if not config.tie_embeddings:  # tied, the logits are x @ wte.weight.T (no bias)
            self.lm_head = Linear(config.n_embd, config.vocab_size, bias=config.bias)
        # Training sets this (--activation-checkpointing): each block's activations are
        # then recomputed in the backward pass instead of kept. Not a parameter: a bool.
        # The recomputation draws new dropout masks, so it needs dropout 0 (config.py).
        self.checkpoint_blocks = False
        self._init_weights()

    def _init_weights(self) -> None:
        # gpt.py's _init_weights: N(0, 0.02) weights, zero biases. MLX's defaults differ
        # (uniform Linear, N(0, 1) Embedding) and the loss at init shows it. The modern
        # block takes the speedrun's (track 3's train_gpt_simple.py): N(0, 1) embedding
        # rows, which the RMSNorm after it rescales anyway, and Linears with PyTorch's
        # default variance, 1 / (3 fan_in), drawn from a normal.
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = 0.02
                if self.config.modern:
                    fan_in = module.weight.shape[-1]
                    std = 1.0 if isinstance(module, nn.Embedding) else (0.33 / fan_in) ** 0.5
                elif self.config.tie_embeddings and name.endswith("c_proj"):
                    # GPT-2: each residual projection scaled by 1/sqrt(2 * n_layer), so the
                    # residual stream's variance does not grow with depth
                    std = 0.02 / math.sqrt(2 * self.config.n_layer)
                if self.config.zero_init and name.endswith(("c_proj", "lm_head")):
                    # Each block starts as the identity and the head says nothing yet: the
                    # first steps grow them from zero (the speedrun's zero-init projections).
                    std = 0.0
                module.weight = std * mx.random.normal(module.weight.shape)
            if isinstance(module, nn.Linear) and "bias" in module:
                module.bias = mx.zeros_like(module.bias)

    def __call__(self, idx: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        return self.head(self.features(idx, cache))  # (B, T, vocab_size)

    def features(self, idx: mx.array, cache: list[KVCache] | None = None) -> mx.array:
        """What the head reads: the final LayerNorm's output, (B, T, C)."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens exceeds block_size {self.config.block_size}")
        # With a cache, the caller keeps offset + T within block_size (the positions
        # learned); the offset is an array there, so it is not checked here.
        offset = cache[0].offset if cache else 0
        if self.config.modern:  # the attention rotates by position (rope.py)
            x = self.ln_wte(self.wte(idx))  # (B, T, C)
        else:
            x = self.wte(idx) + self.wpe(offset + mx.arange(T))  # (B, T, C)
        for i, block in enumerate(self.h):
            if self.checkpoint_blocks and cache is None:
                x = checkpoint(block)(x)  # recomputed in the backward pass, not kept
            else:
                x = block(x, cache[i] if cache else None)
        return self.ln_f(x)

    def head(self, x: mx.array) -> mx.array:
        if self.config.tie_embeddings:
            logits = self.wte.as_linear(x)  # (B, T, vocab_size)
        else:
            logits = self.lm_head(x)  # (B, T, vocab_size)
        if cap := self.config.softcap:
            # The speedrun's soft cap: logits stay within (-cap, cap), nearly unchanged
            # while small. In float32, as the loss takes them.
            logits = logits.astype(mx.float32)
            logits = cap * logits * mx.rsqrt(logits * logits + cap * cap)
        return logits

    def head_matrix(self) -> mx.array | None:
        """The (vocab_size, C) matrix whose product with the features is the logits, when
        that is all the head does (tied, or an lm_head without bias, and no soft cap);
        for a loss that folds the head in (losses.py). None otherwise."""
        if self.config.softcap:
            return None
        if self.config.tie_embeddings:
            return self.wte.weight
        return None if "bias" in self.lm_head else self.lm_head.weight

    def make_cache(self, batch: int = 1) -> list[KVCache]:
        c, dtype = self.config, self.wte.weight.dtype  # the cache holds what the weights make
        return [
            KVCache(batch, c.n_head, c.block_size, c.n_embd // c.n_head, dtype)
            for _ in range(c.n_layer)
        ]

    def num_params(self) -> int:
        from mlx.utils import tree_flatten

        return sum(math.prod(p.shape) for _, p in tree_flatten(self.parameters()))
