"""The optimizers: AdamW as PyTorch computes it (--optimizer adamw), or Muon for the
blocks' matrices and AdamW for the rest (--optimizer muon), each group at its own rate."""

from __future__ import annotations

import mlx.core as mx
import mlx.optimizers as optim
from mlx.utils import tree_flatten

from mlx_gpt.config import TrainConfig
from mlx_gpt.errors import UserError
from mlx_gpt.training.muon import Muon
from mlx_gpt.training.parts import InParts
from mlx_gpt.training.schedules import lr_schedule


class AdamW(InParts, optim.AdamW):
    """MLX's AdamW with PyTorch's bias correction, optionally decaying matrices only.

    nanoGPT decays the 2-D weights (matmuls and embeddings) and leaves biases and
    LayerNorm parameters alone; gpt.py (torch.optim.AdamW defaults) decays everything.
    """

    def __init__(self, *args, decay_matrices_only: bool = False, **kwargs):
        super().__init__(*args, bias_correction=True, **kwargs)
        self.decay_matrices_only = decay_matrices_only

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        if self.decay_matrices_only and parameter.ndim < 2:
            return optim.Adam.apply_single(self, gradient, parameter, state)
        return super().apply_single(gradient, parameter, state)


# --optimizer muon's groups, in the order they claim a parameter (a path as tree_flatten
# gives it): modded-nanogpt's and nanochat's split. The last takes what is left.
GROUPS = ("matrix_qkv", "matrix", "embedding", "unembedding", "scalar")
_CLAIMS = {
    "matrix_qkv": lambda path, p: path.startswith("h.") and path.endswith("attn.c_attn.weight"),
    "matrix": lambda path, p: path.startswith("h.") and p.ndim == 2,
    "embedding": lambda path, p: path.startswith(("wte.", "wpe.")),
    "unembedding": lambda path, p: path == "lm_head.weight",
}


class MuonAdamW(optim.MultiOptimizer):
    """mlx.optimizers.MultiOptimizer over GROUPS: Muon for the 2-D weights inside the
    blocks (c_attn's three matrices one by one), AdamW for the embeddings, the head and
    every 1-D parameter (biases, norm gains). MultiOptimizer's `learning_rate` setter
    would set every group alike, so each optimizer is given its own schedule instead."""

    def __init__(self, optimizers: list[optim.Optimizer]):
        super().__init__(optimizers, [_CLAIMS[name] for name in GROUPS[:-1]])

    def init(self, parameters: dict) -> None:
        if not any(_CLAIMS["matrix"](k, p) for k, p in tree_flatten(parameters)):
            raise UserError(
                "--optimizer muon found no 2-D weights inside the model's blocks to "
                "orthogonalize; use --optimizer adamw"
            )
        super().init(parameters)

    def update_in_parts(self, model, gradients: dict, scale: mx.array, commit: bool = True):
        for o, g in zip(self.optimizers, self._split_dictionary(gradients), strict=True):
            o.update_in_parts(model, g, scale, commit)

    def snapshot(self) -> list[dict]:
        return [o.snapshot() for o in self.optimizers]

    def restore(self, snapshot: list[dict]) -> None:
        for o, s in zip(self.optimizers, snapshot, strict=True):
            o.restore(s)


def make_optimizer(cfg: TrainConfig) -> AdamW | MuonAdamW:
    def adamw(peak: float | None = None) -> AdamW:
        """AdamW on the schedule, peaking at `peak` [default: --learning-rate]."""
        return AdamW(
            learning_rate=lr_schedule(cfg, peak),
            betas=[cfg.beta1, cfg.beta2],
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            decay_matrices_only=cfg.decay_matrices_only,
        )

    if cfg.optimizer == "adamw":
        return adamw()

    def muon(blocks: int) -> Muon:
        return Muon(
            lr_schedule(cfg, cfg.matrix_lr),
            momentum=cfg.muon_momentum,
            weight_decay=cfg.muon_weight_decay,
            blocks=blocks,
        )

    return MuonAdamW(
        [muon(3), muon(1), adamw(cfg.embedding_lr), adamw(cfg.unembedding_lr), adamw(cfg.scalar_lr)]
    )
