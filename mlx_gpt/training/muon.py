"""Muon (MomentUm Orthogonalized by Newton-Schulz), as modded-nanogpt's speedrun applies
it to the 2-D weights inside the blocks (track 3's train_gpt_simple.py).

Each step, Muon keeps a momentum of the gradient, takes the Nesterov blend of the two,
and replaces that matrix by the nearest semi-orthogonal one (every singular value
near 1), found by a few Newton-Schulz iterations instead of an SVD. The update thus
moves every direction the gradient spans by the same amount.

MLX ships mlx.optimizers.Muon, and this is it with three differences, each where its
update is not the speedrun's:
- Weight decay is decoupled, p * (1 - lr * wd), as the speedrun's; MLX's adds wd * p
  to the gradient before the momentum.
- The iteration runs in float32 whatever the gradient's dtype; MLX's runs in the
  input's, which under bf16 compute would be bf16.
- `blocks`: a weight that is several matrices stacked by rows (our fused query, key
  and value projection, c_attn) is orthogonalized matrix by matrix, as the speedrun's
  three separate q, k and v Linears are. The shape-dependent rate, sqrt(max(1,
  rows / cols)), is each matrix's.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.optimizers as optim

from mlx_gpt.training.parts import InParts

# The quintic iteration's coefficients (modded-nanogpt's zeropower_via_newtonschulz5,
# as MLX's Muon): chosen to push every singular value into [0.7, 1.2] fast, not to
# converge to exactly 1.
QUINTIC = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: mx.array, steps: int = 5) -> mx.array:
    """The orthogonalized g, for (..., rows, cols) matrices, in float32."""
    a, b, c = QUINTIC
    x = g.astype(mx.float32)
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the wide form: X X^T is then the smaller square
        x = x.swapaxes(-1, -2)
    # Scaled so that the spectral norm is at most 1, where the iteration converges.
    x = x / (mx.sqrt((x * x).sum(axis=(-2, -1), keepdims=True)) + 1e-7)
    for _ in range(steps):
        A = x @ x.swapaxes(-1, -2)
        B = b * A + c * (A @ A)
        x = a * x + B @ x
    return x.swapaxes(-1, -2) if tall else x


class Muon(InParts, optim.Muon):
    def __init__(
        self,
        learning_rate,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        ns_steps: int = 5,
        blocks: int = 1,
    ):
        super().__init__(learning_rate, momentum, weight_decay, nesterov, ns_steps)
        self.blocks = blocks  # matrices stacked by rows in each weight (3 for c_attn)

    def apply_single(self, gradient: mx.array, parameter: mx.array, state: dict) -> mx.array:
        mu = self.momentum
        g = gradient.astype(mx.float32)
        v = mu * state["v"] + (1 - mu) * g  # the speedrun's momentum.lerp_(grad, 1 - mu)
        state["v"] = v
        update = (1 - mu) * g + mu * v if self.nesterov else v  # grad.lerp_(momentum, mu)
        rows, cols = update.shape
        rows //= self.blocks
        update = newton_schulz(update.reshape(self.blocks, rows, cols), self.ns_steps)
        update = update.reshape(parameter.shape) * max(1.0, rows / cols) ** 0.5
        lr = self.learning_rate.astype(mx.float32)
        decayed = parameter * (1 - lr * self.weight_decay)
        return (decayed - lr * update).astype(parameter.dtype)
