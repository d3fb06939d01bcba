"""One optimizer step (the evaluation between steps is evaluation.py's).

The step is gpt.py's: the batch's mean cross-entropy, its gradient, an AdamW update.
It comes in two forms that give the same update up to float rounding:

- One rank and one micro-batch: `make_train_step`, a single compiled function whose
  state (the model, the optimizer, the random state for dropout) is passed in and out
  explicitly, as in mlx-examples' transformer_lm, with one mx.eval a step.
- Gradient accumulation or several ranks (ranks.py): `AccumulatingStep`.
  --batch-size is the global batch, the sequences behind one optimizer step. Every rank
  draws the whole batch from the same seeded generator, takes its slice of
  batch_size / ranks sequences, and runs it as --grad-accum micro-batches of
  batch_size / (ranks x grad_accum). The gradients are averaged over the micro-batches
  and the ranks (all_sum / ranks, nn.average_gradients) before clipping and the update,
  so the step equals one process's step on the whole batch.
"""

from __future__ import annotations

import time
from functools import partial

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_map, tree_unflatten

from mlx_gpt.config import TrainConfig
from mlx_gpt.distributed.ranks import Ranks
from mlx_gpt.errors import UserError
from mlx_gpt.machine.dtypes import dtype_named
from mlx_gpt.model.gpt import GPT
from mlx_gpt.model.linear import matmul_weights
from mlx_gpt.model.losses import head_cross_entropy
from mlx_gpt.runs import checkpoint


def loss_fn(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    # The softmax and the cross-entropy in float32 whatever the compute dtype: a bf16
    # log-sum-exp over 50,257 logits loses the small differences the loss is made of.
    features = model.features(x)  # (B, T, C)
    matrix = model.head_matrix()
    if matrix is not None:  # the logits a block of rows at a time (losses.py)
        return head_cross_entropy(features, matrix, y)
    logits = model.head(features)  # (B, T, vocab_size)
    return nn.losses.cross_entropy(logits.astype(mx.float32), y, reduction="mean")


def value_and_grad(model: nn.Module, compute_dtype: mx.Dtype = mx.float32):
    """loss_and_grad(model, x, y) -> (loss, gradients), with the forward and backward
    passes in `compute_dtype` and the gradients in float32, the weights' dtype.

    MLX has no autocast and no master weights, so this is both: the float32 weights are
    cast for the passes, and astype is differentiable, so each gradient is cast back to
    float32 on its way to the weight it belongs to. The weights are then put back, for
    the optimizer to update the float32 masters."""
    if compute_dtype == mx.float32:
        return nn.value_and_grad(model, loss_fn)
    # The Linear weights are cast inside their products (linear.py), which keeps no
    # bfloat16 copy of them between the passes; the rest are cast here.
    in_products = matmul_weights(model)

    def loss_of(params, x, y):
        cast = [
            (k, p if k in in_products else p.astype(compute_dtype)) for k, p in tree_flatten(params)
        ]
        model.update(tree_unflatten(cast))
        return loss_fn(model, x, y)

    grad_of = mx.value_and_grad(loss_of)

    def loss_and_grad(model: nn.Module, x: mx.array, y: mx.array):
        params = model.trainable_parameters()
        loss, grads = grad_of(params, x, y)
        model.update(params)  # the float32 masters again
        return loss, grads

    return loss_and_grad


def make_train_step(
    model: nn.Module,
    optimizer: optim.Optimizer,
    grad_clip: float,
    compile=True,
    compute_dtype: mx.Dtype = mx.float32,
):
    """Forward, backward and update as one function of (x, y) that returns the loss.

    Compiled, it captures the model, the optimizer and the random state (dropout) as
    inputs and outputs, so each call reads and writes them. The caller evaluates the
    state once per step. The training flag is read when the step is traced: build the
    step with the model in train mode.
    """
    loss_and_grad = value_and_grad(model, compute_dtype)

    def step(x: mx.array, y: mx.array) -> mx.array:
        loss, grads = loss_and_grad(model, x, y)
        if grad_clip > 0:
            grads, _ = optim.clip_grad_norm(grads, grad_clip)
        optimizer.update(model, grads)
        return loss

    if not compile:
        return step
    state = [model.state, optimizer.state, mx.random.state]
    return partial(mx.compile, inputs=state, outputs=state)(step)


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
    (memory holds one micro-batch's activations). The sums then go through a second
    compiled call that averages them over the ranks and finds the clipping factor,
    evaluated under the ranks' watchdog (it waits for the other ranks); and AdamW
    updates the weights one at a time (optimizer.py: update_in_parts), so that memory
    never holds two copies of the whole model and its moments."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: optim.Optimizer,
        grad_clip: float,
        ranks: Ranks,
        grad_accum: int,
        compute_dtype: mx.Dtype = mx.float32,
    ):
        self.ranks, self.grad_accum = ranks, grad_accum
        loss_and_grad = value_and_grad(model, compute_dtype)
        # Dropout draws from mx.random.state, so it goes in and out of the compiled call. The
        # weights are only read, but an input must be an output too, or the call leaves
        # the model holding its placeholders.
        grad_state = [model.state, mx.random.state]
        self._grad = mx.compile(
            lambda x, y: loss_and_grad(model, x, y), inputs=grad_state, outputs=grad_state
        )
        parts = ranks.size * grad_accum

        def reduce(loss: mx.array, grads):
            """The global batch's mean loss, this step's gradients (the sums over the
            ranks' micro-batches, averaged over the ranks), and the factor that makes
            them the mean over every micro-batch, clipped as optim.clip_grad_norm does.
            With one rank the sums stay as they are (no copy) and the factor does it."""
            if ranks.size > 1:
                grads = nn.average_gradients(grads, group=ranks.group)
            loss = ranks.all_sum(loss) / parts
            scale = mx.array(1.0 / grad_accum)
            if grad_clip > 0:
                squares = [(g.astype(mx.float32) ** 2).sum() for _, g in tree_flatten(grads)]
                norm = mx.sqrt(sum(squares)) / grad_accum
                scale = mx.where(norm < grad_clip, scale, scale * grad_clip / (norm + 1e-6))
            return loss, grads, scale

        self._reduce = mx.compile(reduce)
        self.model, self.optimizer = model, optimizer

    def __call__(self, x: mx.array, y: mx.array, commit: bool = True) -> float:
        """The step; with commit False, all of it but the weights and moments it would
        write (trial_step: its memory, with nothing to undo but the random state)."""
        loss_sum, grad_sum = None, None
        for micro_x, micro_y in my_micro_batches(x, y, self.ranks, self.grad_accum):
            loss, grads = self._grad(micro_x, micro_y)
            if grad_sum is None:
                loss_sum, grad_sum = loss, grads
            else:
                loss_sum = loss_sum + loss
                grad_sum = tree_map(mx.add, grad_sum, grads)
            mx.eval(loss_sum, grad_sum)  # one micro-batch at a time
        loss, grads, scale = self.ranks.run(self._reduce, loss_sum, grad_sum)
        del grad_sum  # with several ranks, the averages replace the sums
        self.optimizer.update_in_parts(self.model, grads, scale, commit)
        return loss.item()


def build_step(model: GPT, optimizer: optim.Optimizer, cfg: TrainConfig, ranks: Ranks):
    """step(x, y) -> the batch's mean loss (a float), the update applied: the single
    compiled step where it serves (one rank, one micro-batch), else AccumulatingStep.
    The model recomputes its blocks in the backward pass if --activation-checkpointing."""
    model.checkpoint_blocks = cfg.activation_checkpointing
    dtype = dtype_named(cfg.dtype)
    if ranks.size == 1 and cfg.grad_accum == 1:
        step = make_train_step(model, optimizer, cfg.grad_clip, compute_dtype=dtype)

        def one_step(x: mx.array, y: mx.array) -> float:
            loss = step(x, y)
            mx.eval(loss, model.state, optimizer.state)
            return loss.item()  # the loss is evaluated already, so this copies and does not wait

        return one_step
    return AccumulatingStep(model, optimizer, cfg.grad_clip, ranks, cfg.grad_accum, dtype)


def trial_step(step, model: nn.Module, optimizer: optim.Optimizer, x, y) -> tuple[float, float]:
    """Run `step` on (x, y) and undo it: the weights, the optimizer state and the random
    state are put back as they were, so the run goes on as if it had not happened.
    Returns the step's seconds (compilation included) and its loss.

    AccumulatingStep can leave the weights and moments as they are itself, so its trial
    holds no second copy of them and measures the memory a real step needs. For the
    single compiled step, MLX arrays are immutable, so keeping references to the old
    ones is a snapshot. They go back into the same containers, since the compiled step
    holds those."""
    key = checkpoint.rng_key()
    start = time.perf_counter()
    if isinstance(step, AccumulatingStep):
        loss = step(x, y, commit=False)
    else:
        params = tree_map(lambda a: a, model.parameters())
        moments = optimizer.snapshot()
        loss = step(x, y)
        model.update(params)
        optimizer.restore(moments)
    seconds = time.perf_counter() - start
    checkpoint.restore_rng_key(key)
    return seconds, loss
