"""One optimizer step from several micro-batches: gradient accumulation and data
parallelism (ranks.py).

--batch-size is the global batch: the sequences behind one optimizer step. Every rank
draws the whole batch from the same seeded generator, takes its slice of
batch_size / ranks sequences, and runs it as --grad-accum micro-batches of
batch_size / (ranks x grad_accum). The gradients are averaged over the micro-batches
and the ranks (all_sum / ranks, nn.average_gradients) before clipping and the update,
so the step equals, up to float rounding, one process's step on the whole batch.

With one rank and no accumulation the trainer keeps its single compiled step
(trainer.make_train_step): this module is not in the way.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from mlx_gpt.errors import UserError
from mlx_gpt.ranks import Ranks


def micro_batch_size(batch_size: int, grad_accum: int, ranks: int) -> int:
    """Sequences per micro-batch, or a UserError (raised before anything is written)."""
    if grad_accum < 1:
        raise UserError("--grad-accum must be a positive integer")
    parts = ranks * grad_accum
    if batch_size % parts:
        raise UserError(
            f"--batch-size {batch_size} does not divide into {ranks} rank(s) x "
            f"--grad-accum {grad_accum} micro-batches; make it a multiple of {parts}"
        )
    return batch_size // parts


def my_micro_batches(
    x: mx.array, y: mx.array, ranks: Ranks, grad_accum: int
) -> list[tuple[mx.array, mx.array]]:
    """This rank's slice of the global batch, cut into grad_accum micro-batches."""
    share = x.shape[0] // ranks.size
    x, y = (
        x[ranks.rank * share : (ranks.rank + 1) * share],
        y[ranks.rank * share : (ranks.rank + 1) * share],
    )
    m = share // grad_accum
    return [(x[i * m : (i + 1) * m], y[i * m : (i + 1) * m]) for i in range(grad_accum)]


class AccumulatingStep:
    """step(x, y) -> the global batch's mean loss (a float), the update applied.

    Each micro-batch's loss and gradient is one compiled call, evaluated before the next
    (memory holds one micro-batch's activations); the sums then go through a second
    compiled call that averages over ranks, clips and updates, evaluated under the
    ranks' watchdog (it waits for the other ranks)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer,
        grad_clip: float,
        ranks: Ranks,
        grad_accum: int,
        loss_fn,
    ):
        self.ranks, self.grad_accum = ranks, grad_accum
        loss_and_grad = nn.value_and_grad(model, loss_fn)
        # dropout draws from mx.random.state: it goes in and out of the compiled call. The
        # weights are only read, but an input must be an output too: else the call leaves
        # the model holding its placeholders.
        grad_state = [model.state, mx.random.state]
        self._grad = mx.compile(
            lambda x, y: loss_and_grad(model, x, y), inputs=grad_state, outputs=grad_state
        )
        parts = ranks.size * grad_accum

        def apply(loss: mx.array, grads):
            # the sums over this rank's micro-batches -> the mean over every micro-batch
            grads = tree_map(lambda g: g / grad_accum, grads)
            grads = nn.average_gradients(grads, group=ranks.group) if ranks.size > 1 else grads
            loss = ranks.all_sum(loss) / parts
            if grad_clip > 0:
                grads, _ = optim.clip_grad_norm(grads, grad_clip)
            optimizer.update(model, grads)
            return loss

        update_state = [model.state, optimizer.state]
        self._apply = mx.compile(apply, inputs=update_state, outputs=update_state)
        self._state = update_state

    def __call__(self, x: mx.array, y: mx.array) -> float:
        loss_sum, grad_sum = None, None
        for mx_, my in my_micro_batches(x, y, self.ranks, self.grad_accum):
            loss, grads = self._grad(mx_, my)
            if grad_sum is None:
                loss_sum, grad_sum = loss, grads
            else:
                loss_sum = loss_sum + loss
                grad_sum = tree_map(mx.add, grad_sum, grads)
            mx.eval(loss_sum, grad_sum)  # one micro-batch at a time
        loss = self.ranks.run(lambda: [self._apply(loss_sum, grad_sum), *self._state])[0]
        return loss.item()
