"""Training configuration: one typed dataclass and the presets. Declarations only: how
a preset, a `--config` file, flags and a run folder combine into one TrainConfig is
settings.py's business.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlx_gpt.errors import UserError
from mlx_gpt.model.activations import ACTIVATIONS
from mlx_gpt.model.gpt import ConfigDict, GPTConfig
from mlx_gpt.tokenizer import KINDS, MAX_VOCAB, MIN_BPE_VOCAB

MODEL_FIELDS = (
    "block_size",
    "n_layer",
    "n_head",
    "n_embd",
    "dropout",
    "activation",
    "qkv_bias",
    "bias",
    "tie_embeddings",
    "architecture",
    "qk_norm",
    "softcap",
    "zero_init",
    "norm_gains",
    "attn_scale",
)
# What a run takes from the run it continues (--resume) or starts from (--init-from):
# the network and the tokens it reads.
INHERITED = (*MODEL_FIELDS, "tokenizer", "vocab_size")
# Of those, what each may set for itself; the rest must match the other run's.
MAY_CHANGE_ON_RESUME = ("dropout",)
# What else a resumed run must keep: its optimizer state is this optimizer's.
FIXED_ON_RESUME = ("optimizer",)
# Training's compute dtypes (--dtype); auto is measured (machine/speed.py) in settings.py.
COMPUTE_DTYPES = ("float32", "bfloat16", "auto")
MAY_CHANGE_ON_INIT_FROM = ("block_size", "dropout")
# The warm-up's divisor: warmup + 1 (nanoGPT) or warmup (build-nanogpt); schedules.py.
WARMUP_RULES = ("nanogpt", "build-nanogpt")
OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")
# What --architecture sets, beneath --config and flags (settings.py): the parts of the
# modern block that are one line of the model each, and so an option each. gpt2 puts
# back the defaults of the ones only the modern block uses.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "gpt2": dict(
        architecture="gpt2", qk_norm=False, softcap=0.0, zero_init=False, norm_gains=False
    ),
    "modern": dict(
        architecture="modern",
        activation="relu2",
        bias=False,
        qkv_bias=False,
        tie_embeddings=False,
        qk_norm=True,
        zero_init=True,
        softcap=15.0,
    ),
}

DEFAULT_PRESET = "lecture"

# The panels of `train.py --help`. START holds what a person decides first; it is
# typer's own panel (the one --help is in), which typer prints first.
START, DATA, MODEL, OPTIM, EVAL, RUNTIME = (
    "Options",
    "Data",
    "Model",
    "Optimization",
    "Evaluation & checkpoints",
    "Runtime",
)


def setting(default: Any, help: str, panel: str, flags: str | None = None) -> Any:
    """A TrainConfig field with its command-line help and --help panel beside it; the
    flag is --the-field-name unless `flags` names it (e.g. "--on/--off")."""
    return field(default=default, metadata={"help": help, "panel": panel, "flags": flags})


def default_run_dir(preset: str) -> Path:
    """Where a run of `preset` goes when --out-dir is not given."""
    return Path("out") / preset


@dataclass
class TrainConfig(ConfigDict):
    """Every setting of a training run: one field each, a flag each (`train.py --help`).

    The defaults are gpt.py's (the lecture preset)."""

    preset: str = setting(
        DEFAULT_PRESET,
        "lecture (gpt.py), nanogpt, small, overfit (small on 100,000 characters: watch "
        "the gap open in minutes), tiny, lecture-bpe (the lecture's size with a "
        "BPE and GPT-2's options), gpt2 (GPT-2 small, 124M, on build-nanogpt's recipe: "
        "days on a laptop even with --data of prepared FineWeb-Edu) or finetune "
        "(nanoGPT's finetune_shakespeare, with --init-from); small-speedrun and gpt2-speedrun: "
        "the same sizes with the modern block, Muon and wsd (modded-nanogpt's speedrun).",
        START,
    )
    data: str | None = setting(
        None,
        "A UTF-8 text file to train on, or a folder of token shards that `python -m "
        "mlx_gpt prepare`, nanoGPT's prepare.py or build-nanogpt's fineweb.py made (read "
        "in place, never loaded). [default: the bundled tiny Shakespeare]",
        START,
    )
    data_chars: int | None = setting(
        None,
        "Train on the first N characters of a --data text file only, cut 90/10 as the "
        "whole would be: a small text, to watch a model overfit it (preset overfit). "
        "[default: all of it]",
        DATA,
    )
    tokenizer: str = setting(
        "char",
        "char (one token per character), bpe (byte-level BPE trained on the training "
        "split) or gpt2 (GPT-2's 50,257 tokens).",
        DATA,
    )
    vocab_size: int = setting(
        1024, f"Tokens of a --tokenizer bpe, {MIN_BPE_VOCAB} to {MAX_VOCAB:,}.", DATA
    )
    tokenizer_path: str | None = setting(
        None,
        "--tokenizer gpt2: a folder with tokenizer.json or vocab.json + merges.txt, or a "
        "Hugging Face hub name. [default: gpt2, from the hub's cache or the network]",
        DATA,
    )
    out_dir: str | None = setting(None, "Run folder. [default: out/PRESET]", START)
    # model (see GPTConfig)
    block_size: int = setting(256, "Context length in tokens.", MODEL)
    n_layer: int = setting(6, "Transformer blocks.", MODEL)
    n_head: int = setting(6, "Attention heads per block.", MODEL)
    n_embd: int = setting(384, "Embedding width (a multiple of --n-head).", MODEL)
    dropout: float = setting(0.2, "Dropout probability in [0, 1).", MODEL)
    activation: str = setting(
        "relu", "MLP activation: relu (gpt.py), gelu (exact) or gelu_tanh (GPT-2).", MODEL
    )
    qkv_bias: bool = setting(
        False,
        "A bias on the query/key/value projection (GPT-2).",
        MODEL,
        "--qkv-bias/--no-qkv-bias",
    )
    bias: bool = setting(
        True,
        "Biases in Linears and LayerNorms; --no-bias drops them all, --qkv-bias too.",
        MODEL,
        "--bias/--no-bias",
    )
    tie_embeddings: bool = setting(
        False,
        "lm_head shares wte's matrix, without a bias, and GPT-2's init (GPT-2).",
        MODEL,
        "--tie-embeddings/--untie-embeddings",
    )
    architecture: str = setting(
        "gpt2",
        "gpt2: learned positions, LayerNorm (the lecture's and GPT-2's block). modern: the "
        "speedrun's and nanochat's block, rotary positions and RMSNorm (also after the "
        "embedding); it also turns on the options below that are one line each: "
        "--activation relu2, --no-bias, --qk-norm, --zero-init, --untie-embeddings, "
        "--softcap 15 (a flag after it still sets its own).",
        MODEL,
    )
    qk_norm: bool = setting(
        False,
        "RMSNorm each head's queries and keys before attention (QK-norm).",
        MODEL,
        "--qk-norm/--no-qk-norm",
    )
    softcap: float = setting(
        0.0,
        "Soft-cap the logits to (-N, N) as the speedrun: N z / sqrt(z^2 + N^2); 0: off.",
        MODEL,
    )
    zero_init: bool = setting(
        False,
        "Start the output projections (attention's, the MLP's) and lm_head at zero.",
        MODEL,
        "--zero-init/--no-zero-init",
    )
    norm_gains: bool = setting(
        False,
        "--architecture modern: its RMSNorms learn a gain per channel (track 3's), "
        "instead of none (nanochat's).",
        MODEL,
        "--norm-gains/--no-norm-gains",
    )
    attn_scale: float = setting(
        0.0, "Attention scores are q.k times this; 0: 1/sqrt(head size).", MODEL
    )
    vocab_multiple: int = setting(
        1,
        "Pad the model's vocabulary (wte's rows, lm_head's outputs) up to a multiple of "
        "this, as build-nanogpt's 50,304 for GPT-2's 50,257 (64: matmuls a GPU tiles "
        "well). No target is ever a padded id, so training pushes them down, and "
        "sampling never draws one. A new run's: --resume and --init-from keep their "
        "model's vocabulary.",
        MODEL,
    )
    init_from: str | None = setting(
        None,
        "Start from this run's weights (a trained or imported run folder): its model and "
        "tokenizer, a new optimizer, step 0. --block-size may shrink, not grow.",
        START,
    )
    # optimization
    max_iters: int = setting(5000, "Optimizer steps in all.", OPTIM)
    batch_size: int = setting(
        64, "Sequences per optimizer step, over all ranks and micro-batches.", OPTIM
    )
    grad_accum: int = setting(
        1,
        "Micro-batches per step (gradient accumulation): each holds --batch-size / "
        "(ranks x N) sequences, so memory is one micro-batch's.",
        OPTIM,
    )
    micro_batch: str | None = setting(
        None,
        "Sequences per micro-batch, N or auto (the largest power of two whose first step "
        "fits in --max-memory); the accumulation steps follow: --batch-size / (ranks x N). "
        "Instead of --grad-accum.",
        OPTIM,
    )
    optimizer: str = setting(
        "adamw",
        "adamw: AdamW on every parameter at --learning-rate. muon: Muon (momentum, then "
        "Newton-Schulz orthogonalization) on the 2-D weights inside the blocks at "
        "--matrix-lr, AdamW on the embeddings (--embedding-lr), lm_head (--unembedding-lr) "
        "and every 1-D parameter (--scalar-lr), as modded-nanogpt's speedrun and nanochat.",
        OPTIM,
    )
    learning_rate: float = setting(3e-4, "Peak learning rate (--optimizer adamw).", OPTIM)
    warmup_iters: int = setting(0, "Linear warm-up steps.", OPTIM)
    warmup_rule: str = setting(
        "nanogpt",
        "The warm-up's k-th update (k = 1, 2, ...) is made at lr * k / (warmup + 1) "
        "with nanogpt (nanoGPT's train.py), at lr * k / warmup with build-nanogpt "
        "(train_gpt2.py). The cosine after it is the same in both.",
        OPTIM,
    )
    lr_decay_iters: int = setting(
        0, "Step where the cosine decay reaches --min-lr; 0 keeps the rate constant.", OPTIM
    )
    min_lr: float = setting(
        3e-4,
        "Learning rate at the end of the cosine decay; with --optimizer muon every group "
        "decays to the same fraction of its peak, --min-lr / --learning-rate.",
        OPTIM,
    )
    schedule: str = setting(
        "cosine",
        "cosine: warm-up, then cosine decay to --min-lr at --lr-decay-iters. wsd: warm-up, "
        "constant, then a linear cool-down over the last --cooldown-frac of --max-iters "
        "toward 0 (the speedrun's).",
        OPTIM,
    )
    cooldown_frac: float = setting(
        0.7, "--schedule wsd: the fraction of --max-iters that cools down, 0 to 1.", OPTIM
    )
    matrix_lr: float = setting(0.025, "--optimizer muon: Muon's peak rate.", OPTIM)
    embedding_lr: float = setting(
        0.7, "--optimizer muon: AdamW's peak rate for wte (and wpe).", OPTIM
    )
    unembedding_lr: float = setting(
        0.004, "--optimizer muon: AdamW's peak rate for lm_head's weight.", OPTIM
    )
    scalar_lr: float = setting(
        0.015, "--optimizer muon: AdamW's peak rate for every 1-D parameter.", OPTIM
    )
    muon_momentum: float = setting(0.95, "Muon's momentum (Nesterov).", OPTIM)
    muon_weight_decay: float = setting(
        0.05, "Muon's weight decay, decoupled: each step p *= 1 - lr x this.", OPTIM
    )
    beta1: float = setting(0.9, "AdamW beta1.", OPTIM)
    beta2: float = setting(0.999, "AdamW beta2.", OPTIM)
    eps: float = setting(1e-8, "AdamW epsilon.", OPTIM)
    weight_decay: float = setting(0.01, "AdamW weight decay.", OPTIM)
    decay_matrices_only: bool = setting(
        False,
        "Decay only 2-D weights (nanoGPT) or every parameter (gpt.py).",
        OPTIM,
        flags="--decay-matrices-only/--decay-all",
    )
    grad_clip: float = setting(0.0, "Clip the gradient norm to this; 0 turns it off.", OPTIM)
    # evaluation & checkpoints
    eval_interval: int = setting(500, "Evaluate and checkpoint every N steps.", EVAL)
    eval_iters: int = setting(200, "Batches per split per evaluation.", EVAL)
    log_interval: int = setting(10, "Log a metrics record every N steps.", EVAL)
    sample_tokens: int | None = setting(
        None,
        "Tokens to generate at every evaluation, into samples.jsonl and the display, to "
        "watch the model learn; 0 turns it off. [default: 200 for char runs, 32 otherwise]",
        EVAL,
    )
    sample_every: str = setting(
        "auto",
        "Sample at every N-th evaluation; auto: at each evaluation that keeps the samples' "
        "seconds within 5% of the run's so far, and the first and the last; that is every "
        "one unless evaluations come every few steps.",
        EVAL,
    )
    sample_prompt: str | None = setting(
        None,
        "Where those samples start. [default: a newline; with GPT-2's tokenizer, "
        "build-nanogpt's \"Hello, I'm a language model,\"]",
        EVAL,
    )
    hellaswag: str | None = setting(
        None,
        "hellaswag_val.jsonl: score HellaSwag at evaluations (build-nanogpt's acc_norm), "
        "into the records as hellaswag_acc_norm and hellaswag_acc. BPE or GPT-2 runs.",
        EVAL,
    )
    hellaswag_every: int = setting(
        0, "Score HellaSwag at evaluations whose step is a multiple of N; 0: at every one.", EVAL
    )
    hellaswag_limit: int | None = setting(
        None, "Only the first N HellaSwag examples. [default: all 10,042]", EVAL
    )
    early_stop: int = setting(
        0, "Stop after N evaluations without a new best val loss; 0: never.", EVAL
    )
    save_every: float = setting(
        10.0,
        "Also save latest/ every N minutes between evaluations (fractions allowed); "
        "0: at evaluations only.",
        EVAL,
    )
    # runtime
    dtype: str = setting(
        "float32",
        "Compute dtype: float32 or bfloat16 (the weights and AdamW's moments stay float32; "
        "the loss is taken in float32); auto: the one a matmul of the model's shapes runs "
        "faster in here (measured once, kept in ~/.cache/mlx-gpt).",
        RUNTIME,
    )
    activation_checkpointing: bool = setting(
        False,
        "Recompute each block in the backward pass instead of keeping its activations: "
        "far less memory, about a third more compute.",
        RUNTIME,
        "--activation-checkpointing/--no-activation-checkpointing",
    )
    seed: int = setting(1337, "Random seed.", RUNTIME)
    peer_timeout: float = setting(
        120.0,
        "Several ranks (mlx.launch): seconds one waits for the others before it stops "
        "(exit 5). A rank that dies is noticed at once; this bounds one that hangs.",
        RUNTIME,
    )
    max_memory: float | None = setting(
        None,
        "Memory budget in GB: a first step that uses more stops the run, with a batch "
        "size that fits. [default: 80% of RAM; on a Mac, of what Metal recommends]",
        RUNTIME,
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_config(self, vocab_size: int) -> GPTConfig:
        """The model for a tokenizer of `vocab_size` tokens, padded to --vocab-multiple."""
        padded = -(-vocab_size // self.vocab_multiple) * self.vocab_multiple
        return GPTConfig(vocab_size=padded, **{k: getattr(self, k) for k in MODEL_FIELDS})

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else default_run_dir(self.preset)

    def validate(self) -> None:
        """Raise UserError, naming the flag, for any nonsense value."""

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise UserError(msg)

        positive = ("block_size", "n_layer", "n_head", "n_embd", "max_iters", "batch_size")
        for name in (*positive, "grad_accum", "vocab_multiple"):
            need(getattr(self, name) >= 1, f"--{flag(name)} must be a positive integer")
        for name in ("eval_interval", "eval_iters", "log_interval"):
            need(getattr(self, name) >= 1, f"--{flag(name)} must be a positive integer")
        need(
            self.n_embd % self.n_head == 0,
            f"--n-embd ({self.n_embd}) must be divisible by --n-head ({self.n_head})",
        )
        need(0 <= self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}")
        need(
            self.activation in ACTIVATIONS,
            f"--activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}",
        )
        need(
            self.tokenizer in KINDS,
            f"--tokenizer must be one of {', '.join(KINDS)}, not {self.tokenizer!r}",
        )
        need(
            self.vocab_size >= MIN_BPE_VOCAB,
            f"--vocab-size must be at least {MIN_BPE_VOCAB}: a byte-level BPE starts from the "
            f"{MIN_BPE_VOCAB} bytes",
        )
        need(
            self.vocab_size <= MAX_VOCAB,
            f"--vocab-size {self.vocab_size} is above {MAX_VOCAB:,}, the most that uint16 "
            "token ids hold; choose a smaller one",
        )
        for name in (
            "learning_rate", "min_lr", "matrix_lr", "embedding_lr", "unembedding_lr",
            "scalar_lr", "eps",
        ):  # fmt: skip
            value = getattr(self, name)
            need(math.isfinite(value) and value > 0, f"--{flag(name)} must be positive")
        need(self.weight_decay >= 0, "--weight-decay must be >= 0")
        need(self.grad_clip >= 0, "--grad-clip must be >= 0 (0 turns clipping off)")
        need(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "--beta1 and --beta2 must be in [0, 1)")
        need(self.data_chars is None or self.data_chars >= 1, "--data-chars must be at least 1")
        need(self.sample_tokens is None or self.sample_tokens >= 0, "--sample-tokens must be >= 0")
        need(
            self.sample_every == "auto"
            or (self.sample_every.isdigit() and int(self.sample_every) >= 1),
            f"--sample-every must be a positive integer or auto, not {self.sample_every!r}",
        )
        need(self.hellaswag_every >= 0, "--hellaswag-every must be >= 0 (0: every evaluation)")
        need(
            self.hellaswag_limit is None or self.hellaswag_limit >= 1,
            "--hellaswag-limit must be at least 1",
        )
        for name in ("warmup_iters", "lr_decay_iters", "early_stop", "save_every"):
            need(getattr(self, name) >= 0, f"--{flag(name)} must be >= 0")
        need(self.peer_timeout > 0, "--peer-timeout must be a positive number of seconds")
        need(
            not (self.activation_checkpointing and self.dropout > 0),
            "--activation-checkpointing needs --dropout 0: the backward pass recomputes "
            "each block and would draw new dropout masks, so the gradient would be wrong",
        )
        need(
            self.dtype in COMPUTE_DTYPES,
            f"--dtype must be one of {', '.join(COMPUTE_DTYPES)}, not {self.dtype!r}",
        )
        need(
            self.micro_batch in (None, "auto")
            or (self.micro_batch.isdigit() and int(self.micro_batch) >= 1),
            f"--micro-batch must be a positive integer or auto, not {self.micro_batch!r}",
        )
        need(
            self.max_memory is None or (math.isfinite(self.max_memory) and self.max_memory > 0),
            "--max-memory must be a positive number of GB",
        )
        need(
            self.warmup_rule in WARMUP_RULES,
            f"--warmup-rule must be one of {', '.join(WARMUP_RULES)}, not {self.warmup_rule!r}",
        )
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("schedule", SCHEDULES),
            ("architecture", tuple(ARCHITECTURES)),
        ):
            value = getattr(self, name)
            need(
                value in choices,
                f"--{flag(name)} must be one of {', '.join(choices)}, not {value!r}",
            )
        need(
            0 <= self.cooldown_frac <= 1,
            f"--cooldown-frac must be between 0 and 1, not {self.cooldown_frac}",
        )
        need(0 <= self.muon_momentum < 1, "--muon-momentum must be in [0, 1)")
        need(self.muon_weight_decay >= 0, "--muon-weight-decay must be >= 0")
        need(self.softcap >= 0, "--softcap must be >= 0 (0 turns it off)")
        need(self.attn_scale >= 0, "--attn-scale must be >= 0 (0: 1/sqrt(head size))")
        need(
            self.architecture == "modern" or not self.norm_gains,
            "--norm-gains is the modern block's RMSNorm's; add --architecture modern",
        )
        need(
            self.architecture != "modern" or (self.n_embd // self.n_head) % 2 == 0,
            f"--architecture modern rotates pairs of channels: the head size "
            f"(--n-embd / --n-head = {self.n_embd // self.n_head}) must be even",
        )
        need(
            self.lr_decay_iters == 0 or self.lr_decay_iters > self.warmup_iters,
            "--lr-decay-iters must be larger than --warmup-iters (or 0 for a constant rate)",
        )


def first_difference(cfg: TrainConfig, other: TrainConfig, names) -> tuple[str, Any, Any] | None:
    """The first of `names` whose value differs between two configs, as (name, cfg's,
    other's); vocab_size counts only when `other` trains a bpe tokenizer."""
    for name in names:
        if name == "vocab_size" and other.tokenizer != "bpe":
            continue
        if getattr(cfg, name) != getattr(other, name):
            return name, getattr(cfg, name), getattr(other, name)
    return None


def flag(field_name: str) -> str:
    return field_name.replace("_", "-")
