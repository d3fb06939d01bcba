"""One PyTorch measurement in a process of its own: `python bench/torch_worker.py SPEC_JSON`.

Variants: eager fp32 with gpt.py's attention (eager-gptpy) or fused SDPA (eager-sdpa),
torch.compile of the latter (compile), and mixed precision autocast (bf16 on CPU and
CUDA, fp16 on MPS).
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F
from common import (
    MB,
    emit,
    generation_figures,
    model_dims,
    native_bf16,
    peak_rss_mb,
    read_spec,
    time_calls,
    training_figures,
    vocab_size,
)
from torch_gpt import TorchGPT, make_optimizer, pick_device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def autocast_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "mps" else torch.bfloat16


# What each device's "peak MB" counts, for the table's legend and the JSON.
PEAK_COUNTS = {
    "cuda": "live tensors at the peak (torch.cuda.max_memory_allocated)",
    "mps": "live tensors, the most of current_allocated_memory after forward, backward "
    "and the update",
    "cpu": "the process's peak RSS",
}


class MpsHigh:
    """The most memory live tensors held on MPS, sampled at a step's high points. MPS has
    no peak counter, and driver_allocated_memory() is the driver's current total with its
    cache, which is neither a peak nor what the step needs."""

    def __init__(self, device: torch.device):
        self.on = device.type == "mps"
        self.bytes = 0

    def sample(self) -> None:
        if self.on:
            self.bytes = max(self.bytes, torch.mps.current_allocated_memory())


def peak_memory_mb(device, mps: MpsHigh) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / MB
    if device.type == "mps":
        return mps.bytes / MB
    return peak_rss_mb()


@torch.no_grad()
def generate(model, n: int, cached: bool, device) -> int:
    """gpt.py's crop loop, or the same fast window as mlx_gpt's KV cache."""
    block = model.block_size
    ids = [0]
    gen = torch.Generator(device="cpu").manual_seed(1337)

    def sample(logits):
        probs = F.softmax(logits.float().cpu(), dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))

    if not cached:
        for _ in range(n):
            ids.append(sample(model(torch.tensor([ids[-block:]], device=device))[0, -1]))
        return n
    cache = model.make_cache()
    logits = model(torch.tensor([ids], device=device), cache)[0, -1]
    for i in range(n):
        ids.append(sample(logits))
        if i + 1 == n:
            break
        if cache[0]["offset"] == block:  # full: restart from the last half block
            cache = model.make_cache()
            logits = model(torch.tensor([ids[-(block // 2) :]], device=device), cache)[0, -1]
        else:
            logits = model(torch.tensor([[ids[-1]]], device=device), cache)[0, -1]
    return n


def main() -> None:
    spec = read_spec()
    config, variant = spec["config"], spec["variant"]
    device = pick_device(spec["device"])
    torch.set_num_threads(spec["threads"])
    B, T = config["batch_size"], config["block_size"]
    autocast = variant.startswith("autocast")
    if autocast and device.type == "cpu" and not native_bf16():
        # Emulated bf16 would take minutes per matmul and measure the emulation.
        emit({"framework": "torch", "variant": variant, "skipped": "no native bf16 on this CPU"})
        return

    torch.manual_seed(1337)
    attention = "gptpy" if variant == "eager-gptpy" else "sdpa"
    vocab = vocab_size(config)
    model = TorchGPT(vocab_size=vocab, attention=attention, **model_dims(config)).to(device)
    optimizer = make_optimizer(model, 3e-4, (0.9, 0.999), 0.01, False)  # gpt.py's AdamW
    forward = torch.compile(model) if variant == "compile" else model
    x = torch.randint(0, vocab, (B, T), device=device)
    y = torch.randint(0, vocab, (B, T), device=device)

    mps = MpsHigh(device)

    def one_step():
        with torch.autocast(device.type, dtype=autocast_dtype(device), enabled=autocast):
            logits = forward(x)
            loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1))
        mps.sample()  # the activations, all held for the backward pass
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        mps.sample()  # the gradients
        optimizer.step()
        mps.sample()  # AdamW's moments (made at the first step)
        loss.item()
        sync(device)

    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    one_step()
    compile_s = time.perf_counter() - start
    times = time_calls(one_step, spec["warmup_steps"] + spec["train_steps"])
    n_params = sum(p.numel() for p in model.parameters())
    result = {
        "framework": "torch",
        "variant": variant,
        "device": str(device),
        "version": torch.__version__,
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "threads": torch.get_num_threads(),
        **training_figures(config, n_params, compile_s, times, spec["warmup_steps"]),
        "peak_memory_mb": peak_memory_mb(device, mps),
        "peak_memory_counts": PEAK_COUNTS[device.type],
    }
    result["peak_rss_mb"] = peak_rss_mb()
    emit(result)  # the training figures survive a generation that runs out of time
    model.eval()
    result.update(generation_figures(spec, lambda n, cached: generate(model, n, cached, device)))
    result["peak_rss_mb"] = peak_rss_mb()
    result["env_threads"] = os.environ.get("OMP_NUM_THREADS")
    emit(result)


if __name__ == "__main__":
    main()
