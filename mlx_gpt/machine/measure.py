"""`python -m mlx_gpt info --measure`: what this machine does with mlx-gpt's models, in
about a minute. A preset's training step on random tokens, compiled as training compiles
it (tok/s, MLX's peak memory), in each compute dtype worth measuring; GPT-2 (124M) one
micro-batch at a time, if it fits the memory budget; and from those, the arithmetic
README gives (the lecture's 5000 steps in minutes, GPT-2's 10B tokens in days).

Returns figures and never prints: the command prints them, and a progress callback says
what is being measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from mlx_gpt.machine.facts import GB, Machine

GPT2_TOKENS = 10e9  # build-nanogpt's run: one epoch of FineWeb-Edu's 10B-token sample
BYTES_PER_PARAMETER = 16  # float32 weight, gradient and AdamW's two moments


@dataclass
class StepFigures:
    """One preset's training step as measured (or why it was not)."""

    preset: str
    dtype: str
    micro_batch: int  # sequences per step measured
    block_size: int
    parameters: int
    seconds: list[float] = field(default_factory=list)  # each timed step, after compiling
    peak_bytes: int = 0  # MLX's peak memory over the first step
    skipped: str = ""  # why it was not measured

    @property
    def tokens_per_sec(self) -> float:
        return self.micro_batch * self.block_size / statistics.median(self.seconds)

    def to_dict(self) -> dict:
        figures = {"tokens_per_sec": self.tokens_per_sec} if self.seconds else {}
        return {**asdict(self), **figures}


def tokens_of(cfg) -> int:
    """The vocabulary a preset's tokenizer brings (before --vocab-multiple pads it)."""
    return {"char": 65, "gpt2": 50_257}.get(cfg.tokenizer, cfg.vocab_size)


def predicted_peak(parameters: int, cfg, micro_batch: int) -> int:
    """A step's least peak: the weights, gradients and moments, and one float32
    residual stream per layer for each sequence (the activations hold more)."""
    per_sequence = 4 * cfg.n_layer * cfg.block_size * cfg.n_embd
    return BYTES_PER_PARAMETER * parameters + per_sequence * micro_batch


def measure_step(
    preset: str,
    dtype: str,
    micro_batch: int | None = None,
    steps: int = 1,
    budget: int | None = None,
    machine: Machine | None = None,
) -> StepFigures:
    """One preset's training step on random tokens: one step that compiles (its peak
    measured as --micro-batch auto measures), then `steps` timed, each undone. With
    micro_batch, that many sequences in one AccumulatingStep micro-batch (as a GPT-2 run
    steps); without, the preset's whole batch in the compiled step. Skipped, with the
    reason, when even its least peak is over `budget`."""
    import mlx.core as mx
    import numpy as np

    from mlx_gpt.config import TrainConfig
    from mlx_gpt.distributed.ranks import Ranks
    from mlx_gpt.machine.dtypes import dtype_named
    from mlx_gpt.model.gpt import GPT
    from mlx_gpt.presets import PRESETS
    from mlx_gpt.training import guards
    from mlx_gpt.training.optimizer import make_optimizer
    from mlx_gpt.training.step import AccumulatingStep, build_step, trial_step

    machine = machine or Machine.detect()
    budget = budget if budget is not None else machine.memory_budget_bytes()
    settings = {**PRESETS[preset], "dtype": dtype, "micro_batch": None, "grad_accum": 1}
    cfg = TrainConfig.from_dict(settings)
    if micro_batch is not None:
        cfg = replace(cfg, batch_size=micro_batch)
    model = GPT(cfg.model_config(tokens_of(cfg)))  # lazy: nothing is allocated yet
    parameters = model.num_params()
    figures = StepFigures(preset, dtype, cfg.batch_size, cfg.block_size, parameters)
    if (least := predicted_peak(parameters, cfg, cfg.batch_size)) > budget:
        figures.skipped = (
            f"needs at least {guards.size_text(least)}, over the budget of "
            f"{guards.size_text(budget)}"
        )
        return figures
    optimizer = make_optimizer(cfg)
    optimizer.init(model.trainable_parameters())
    if micro_batch is not None:
        step = AccumulatingStep(model, optimizer, cfg.grad_clip, Ranks(), 1, dtype_named(dtype))
    else:
        step = build_step(model, optimizer, cfg, Ranks())
    rng = np.random.default_rng(0)
    ids = rng.integers(0, tokens_of(cfg), (cfg.batch_size, cfg.block_size + 1))
    x, y = mx.array(ids[:, :-1]), mx.array(ids[:, 1:])
    mx.eval(model.parameters(), optimizer.state, x, y)
    mx.clear_cache()
    mx.reset_peak_memory()
    previous = mx.set_memory_limit(budget)
    try:
        with guards.working_set(machine, budget):
            trial_step(step, model, optimizer, x, y)  # compiles
        figures.peak_bytes = mx.get_peak_memory()
        figures.seconds = [trial_step(step, model, optimizer, x, y)[0] for _ in range(steps)]
    finally:
        mx.set_memory_limit(previous)
    mx.clear_cache()
    return figures


@dataclass
class Measurements:
    """All of `info --measure`: the machine's facts, the steps, and their arithmetic."""

    machine: dict
    dtype_auto: dict
    steps: list[StepFigures]

    def arithmetic(self) -> list[dict]:
        """README's sums, from the figures: a preset's whole run of max_iters steps in
        minutes (evaluations left out), and GPT-2's 10B tokens in days. Each is a dict
        with its name (as in the JSON), a sentence, and the value."""
        from mlx_gpt.presets import PRESETS

        out = []
        for s in self.steps:
            if not s.seconds:
                continue
            if s.preset == "gpt2":
                days = GPT2_TOKENS / s.tokens_per_sec / 86400
                name, text = f"gpt2_10B_tokens_days_{s.dtype}", f"GPT-2's 10B tokens in {s.dtype}"
                out.append({"name": name, "text": f"{text}: {days:,.1f} days", "value": days})
            else:
                iters = PRESETS[s.preset].get("max_iters", 5000)
                minutes = iters * statistics.median(s.seconds) / 60
                name = f"{s.preset}_{iters}_steps_minutes_{s.dtype}"
                text = f"{s.preset}'s {iters} steps in {s.dtype}: {minutes:,.1f} minutes"
                out.append({"name": name, "text": text, "value": minutes})
        return out

    def to_dict(self) -> dict:
        return {
            "machine": self.machine,
            "dtype_auto": self.dtype_auto,
            "steps": [s.to_dict() for s in self.steps],
            "arithmetic": {a["name"]: a["value"] for a in self.arithmetic()},
        }


def measure_machine(
    presets: list[str],
    budget: int | None = None,
    on_progress: Callable[[str], None] = lambda _: None,
) -> Measurements:
    """Every measurement of `info --measure`, for `presets` (gpt2 one micro-batch at a
    time; every other preset at its whole batch), within `budget` bytes (the machine's
    default budget if None)."""
    import mlx.core as mx

    from mlx_gpt.config import TrainConfig
    from mlx_gpt.machine.speed import choose_dtype, model_shape
    from mlx_gpt.presets import PRESETS

    machine = Machine.detect()
    budget = machine.memory_budget_bytes() if budget is None else budget
    facts = {
        "sys_platform": machine.sys_platform,
        "backend": machine.backend,
        "device_info": dict(machine.device_info),
        "cpu": machine.cpu_name,
        "ram_gb": machine.ram_bytes / GB,
        "memory_budget_gb": budget / GB,
        "bf16_native_cpu": machine.bf16_native,
        "tf32": machine.tf32,
        "mlx": mx.__version__,
    }
    steps, auto = [], {}
    for preset in presets:
        cfg = TrainConfig.from_dict(PRESETS[preset])
        on_progress(f"{preset}: a matmul of its shapes in float32 and bfloat16")
        choice = choose_dtype(model_shape(cfg.block_size, cfg.n_embd), machine)
        auto[preset] = {"chose": choice.dtype, "gflops": choice.gflops}
        micro = 1 if preset == "gpt2" else None
        for dtype in ("float32", "bfloat16"):
            if dtype != choice.dtype and dtype == "bfloat16":
                slower = choice.gflops["float32"] / max(choice.gflops["bfloat16"], 1e-9)
                skipped = StepFigures(preset, dtype, micro or cfg.batch_size, cfg.block_size, 0)
                skipped.skipped = (
                    f"bfloat16 matmuls run {slower:.1f}x slower than float32 here, so "
                    f"--dtype auto trains in float32"
                )
                steps.append(skipped)
                continue
            what = f"micro-batch {micro}" if micro else f"batch {cfg.batch_size}"
            on_progress(f"{preset}: a {dtype} training step ({what} x {cfg.block_size})")
            steps.append(measure_step(preset, dtype, micro, budget=budget, machine=machine))
    return Measurements(facts, auto, steps)
