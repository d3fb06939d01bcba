"""One MLX measurement in a process of its own: `python bench/mlx_worker.py SPEC_JSON`.

MLX as a user gets it by default: the compiled training step of mlx_gpt, fp32.
"""

from __future__ import annotations

import time

# isort: off
import mlx_gpt  # noqa: F401  (first: on Linux it points MLX at OpenBLAS before mlx.core loads)
import mlx.core as mx

# isort: on
import numpy as np
from common import (
    MB,
    emit,
    generation_figures,
    model_dims,
    peak_rss_mb,
    read_spec,
    time_calls,
    training_figures,
    vocab_size,
)

from mlx_gpt.config import TrainConfig
from mlx_gpt.generation.decoding import cached_tokens, exact_tokens
from mlx_gpt.generation.sampling import Sampler
from mlx_gpt.machine import linux_blas
from mlx_gpt.machine.facts import Machine
from mlx_gpt.model.gpt import GPT
from mlx_gpt.training.optimizer import make_optimizer
from mlx_gpt.training.step import make_train_step


def main() -> None:
    spec = read_spec()
    linux_blas.set_threads(spec["threads"])
    config = spec["config"]
    B, T = config["batch_size"], config["block_size"]

    mx.random.seed(1337)
    cfg = TrainConfig.from_dict({**model_dims(config), "batch_size": B})
    vocab = vocab_size(config)
    model = GPT(cfg.model_config(vocab))
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    model.train()
    step = make_train_step(model, optimizer, cfg.grad_clip)
    rng = np.random.default_rng(0)
    x = mx.array(rng.integers(0, vocab, (B, T)))
    y = mx.array(rng.integers(0, vocab, (B, T)))

    def one_step():
        loss = step(x, y)
        mx.eval(loss, model.state, optimizer.state)

    mx.reset_peak_memory()
    start = time.perf_counter()
    one_step()  # traces and compiles
    compile_s = time.perf_counter() - start
    times = time_calls(one_step, spec["warmup_steps"] + spec["train_steps"])
    machine = Machine.detect()
    result = {
        "framework": "mlx",
        "variant": "mlx (compiled, fp32)",
        "device": mx.default_device().type.name,  # cpu or gpu
        "mlx_backend": machine.backend,  # metal, cuda or cpu
        "tf32": machine.tf32,  # float32 matmuls as TF32 (CUDA, unless MLX_ENABLE_TF32=0)
        "version": mx.__version__,
        "blas": linux_blas.describe(),
        "blas_core": linux_blas.status.core,
        "blas_threads": linux_blas.status.threads,
        "blas_warning": linux_blas.warning(),
        "sgemm_from": linux_blas.sgemm_provider(),
        **training_figures(config, model.num_params(), compile_s, times, spec["warmup_steps"]),
        "peak_memory_mb": mx.get_peak_memory() / MB,
        "peak_memory_counts": "live buffers at the peak (mx.get_peak_memory)",
    }

    def generate(n: int, cached: bool) -> int:
        tokens = cached_tokens if cached else exact_tokens
        return sum(1 for _ in tokens(model, [0], n, Sampler(seed=1337)))

    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)  # the training figures survive a generation that runs out of time
    model.eval()
    result.update(generation_figures(spec, generate))
    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)


if __name__ == "__main__":
    main()
