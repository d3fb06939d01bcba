"""The same network in PyTorch: the baseline for bench/compare.py and the parity tests.

Parameter names and shapes equal mlx_gpt.model.gpt.GPT's (torch's Linear stores (out, in)
like MLX's), so weights copy key for key. The GPT-2 options are mlx_gpt's: activation,
qkv_bias, bias (False: none anywhere), tie_embeddings (the head reads wte's matrix; no
lm_head key). Lives outside the package: mlx_gpt never imports torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        n_embd: int,
        n_head: int,
        block_size: int,
        dropout: float,
        attention: str,
        qkv_bias: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.n_head, self.head_size, self.dropout = n_head, n_embd // n_head, dropout
        self.attention = attention  # "gptpy": gpt.py's explicit softmax; "sdpa": fused
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=qkv_bias and bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.attn_dropout = nn.Dropout(dropout)
        self.resid_dropout = nn.Dropout(dropout)
        tril = torch.tril(torch.ones(block_size, block_size))
        self.register_buffer("tril", tril, persistent=False)  # not a parameter: no key to copy

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, self.head_size).transpose(1, 2) for z in (q, k, v))
        offset = 0
        if cache is not None:
            offset = cache["offset"]
            cache["k"][:, :, offset : offset + T] = k
            cache["v"][:, :, offset : offset + T] = v
            k, v = cache["k"][:, :, : offset + T], cache["v"][:, :, : offset + T]
        if self.attention == "gptpy":
            att = (q @ k.transpose(-2, -1)) * self.head_size**-0.5
            mask = self.tril[offset : offset + T, : offset + T] == 0
            att = self.attn_dropout(F.softmax(att.masked_fill(mask, float("-inf")), dim=-1))
            y = att @ v
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=offset == 0 and T > 1,
                attn_mask=None,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, activation: str = "relu", bias: bool = True):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = ACTIVATIONS[activation]

    def forward(self, x):
        return self.dropout(self.c_proj(self.activation(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size, dropout, attention, options):
        super().__init__()
        bias, eps = options["bias"], options["norm_eps"]
        self.ln_1 = nn.LayerNorm(n_embd, eps=eps, bias=bias)
        self.attn = CausalSelfAttention(
            n_embd, n_head, block_size, dropout, attention, options["qkv_bias"], bias
        )
        self.ln_2 = nn.LayerNorm(n_embd, eps=eps, bias=bias)
        self.mlp = MLP(n_embd, dropout, options["activation"], bias)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class TorchGPT(nn.Module):
    def __init__(
        self,
        vocab_size: int = 65,
        block_size: int = 256,
        n_layer: int = 6,
        n_head: int = 6,
        n_embd: int = 384,
        dropout: float = 0.2,
        attention: str = "sdpa",
        activation: str = "relu",
        qkv_bias: bool = False,
        bias: bool = True,
        tie_embeddings: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.block_size, self.n_layer = block_size, n_layer
        self.n_head, self.n_embd = n_head, n_embd
        options = dict(activation=activation, qkv_bias=qkv_bias, bias=bias, norm_eps=norm_eps)
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(
            Block(n_embd, n_head, block_size, dropout, attention, options) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd, eps=norm_eps, bias=bias)
        self.tie_embeddings = tie_embeddings
        self.lm_head = None if tie_embeddings else nn.Linear(n_embd, vocab_size, bias=bias)
        self.apply(self._init_weights)
        if tie_embeddings:  # GPT-2's scaled init of the residual projections
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, cache: list[dict] | None = None):
        B, T = idx.shape
        offset = cache[0]["offset"] if cache else 0
        pos = torch.arange(offset, offset + T, device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for i, block in enumerate(self.h):
            x = block(x, cache[i] if cache else None)
        if cache:
            for c in cache:
                c["offset"] += T
        x = self.ln_f(x)
        return F.linear(x, self.wte.weight) if self.tie_embeddings else self.lm_head(x)

    def make_cache(self, batch: int = 1) -> list[dict]:
        p = next(self.parameters())
        shape = (batch, self.n_head, self.block_size, self.n_embd // self.n_head)
        return [
            {
                "k": torch.zeros(shape, device=p.device, dtype=p.dtype),
                "v": torch.zeros(shape, device=p.device, dtype=p.dtype),
                "offset": 0,
            }
            for _ in range(self.n_layer)
        ]


def lr_at(step: int, learning_rate, warmup_iters=0, lr_decay_iters=0, min_lr=0.0) -> float:
    """nanoGPT's get_lr(it), written plainly: the reference for MLX's schedule."""
    if step < warmup_iters:
        return learning_rate * (step + 1) / (warmup_iters + 1)
    if lr_decay_iters == 0:
        return learning_rate
    ratio = min(1.0, (step - warmup_iters) / (lr_decay_iters - warmup_iters))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def make_optimizer(model, learning_rate, betas, weight_decay, decay_matrices_only, fused=None):
    if decay_matrices_only:
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.backends.mps.is_available():
        return torch.device("mps")
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")
