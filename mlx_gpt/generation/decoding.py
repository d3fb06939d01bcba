"""Sampling text from a trained model, with a key/value cache.

    for piece in stream_generate(model, tokenizer, "ROMEO:", 500):
        print(piece.text, end="", flush=True)

The model has learned absolute positions for `block_size` slots, so a sequence longer
than that cannot simply keep growing its cache. Two windows:

* exact: the lecture's semantics. Every token is conditioned on the last block_size
  tokens with a full forward pass: block_size times the work per token.
* fast (default): the cache fills to block_size; then it is rebuilt from the last
  block_size // 2 tokens (one forward pass of half a block), and filling resumes.
  Identical to exact while the sequence fits in block_size; after that each token sees
  between block_size // 2 and block_size tokens of context instead of exactly
  block_size, at roughly one full forward pass per block_size // 2 tokens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import mlx.core as mx

from mlx_gpt.errors import UserError
from mlx_gpt.generation.sampling import Sampler
from mlx_gpt.metrics import peak_memory_mb
from mlx_gpt.model.gpt import GPT
from mlx_gpt.tokenizer import Tokenizer

WINDOWS = ("fast", "exact")


def exact_tokens(
    model: GPT, ids: list[int], n: int, sampler: Sampler, vocab: int | None = None
) -> Iterator[int]:
    """The lecture's loop: crop to the last block_size tokens, full forward, sample.
    Only the first `vocab` logits are drawn from (the tokenizer's; the rest is padding)."""
    ids = list(ids)
    block = model.config.block_size
    for _ in range(n):
        logits = model(mx.array([ids[-block:]]))[:, -1, :vocab]  # (1, vocab)
        token = sampler(logits).item()
        ids.append(token)
        yield token


def cached_tokens(
    model: GPT, ids: list[int], n: int, sampler: Sampler, vocab: int | None = None
) -> Iterator[int]:
    """One token per step through the cache; re-prefill half a block when full. Only
    the first `vocab` logits are drawn from, as in exact_tokens.

    The one-token step (forward through the cache, then sampling) is compiled once: the
    cache keeps every shape fixed and its write position is an array. The next token's
    computation is queued (async_eval) before the current one is handed to the caller,
    so the device works while the host decodes and prints.
    """
    ids = list(ids)
    block = model.config.block_size
    cache = model.make_cache()
    # The step's state: the cache and the sampler's key. The weights do not change while
    # this generator runs, so the trace takes them as constants (7% faster on a CPU than
    # passing model.state in at every call).
    state = [[c.state for c in cache], sampler.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def decode(token: mx.array) -> mx.array:
        return sampler(model(token, cache)[:, -1, :vocab])  # (1, 1) -> (1,)

    def prefill(context: list[int]) -> mx.array:
        for c in cache:
            c.reset()
        return sampler(model(mx.array([context]), cache)[:, -1, :vocab])

    context = ids[-block:]
    y, filled = prefill(context), len(context)  # filled mirrors the cache's offset on the host
    mx.async_eval(y)
    for i in range(n):
        if i + 1 < n:
            if filled == block:  # the cache is full, so restart it from the last half block
                next_y, filled = prefill((ids + [y.item()])[-(block // 2) :]), block // 2
            else:
                next_y, filled = decode(y[:, None]), filled + 1
            mx.async_eval(next_y)
        token = y.item()
        ids.append(token)
        yield token
        if i + 1 < n:
            y = next_y


@dataclass
class GenerationResponse:
    """One streamed step: the new text and the running figures. `text` is "" while a
    byte-level token ends inside a multi-byte character (the next step completes it)."""

    text: str
    token: int
    generated: int
    tokens_per_sec: float
    peak_memory_mb: float


@dataclass
class GenerationResult:
    text: str  # the generated text, without the prompt
    prompt_tokens: int
    generated: int  # tokens (characters, for a char tokenizer)
    seconds: float
    tokens_per_sec: float  # generated tokens per second, prefill included
    peak_memory_mb: float


def start_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids; with no prompt, a newline (gpt.py starts from token 0). A char
    tokenizer refuses characters it does not know; a byte-level one takes any text."""
    if prompt:
        try:
            return tokenizer.encode(prompt)
        except UserError as e:
            raise UserError(
                f"prompt: {e} of this char run; write the prompt in the characters it was "
                "trained on, or sample from a BPE run (train.py --tokenizer bpe), which "
                "encodes any text"
            ) from None
    try:
        return tokenizer.encode("\n") or [0]
    except UserError:  # a text without newlines
        return [0]


def stream_generate(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_tokens: int,
    sampler: Sampler | None = None,
    window: str = "fast",
) -> Iterator[GenerationResponse]:
    """Yield each generated token, and its text, as it is produced. Bad arguments raise
    here, at the call, before anything is generated."""
    if window not in WINDOWS:
        raise UserError(f"--window must be one of {', '.join(WINDOWS)}, not {window!r}")
    if max_tokens < 1:
        raise UserError("--tokens must be at least 1")
    ids = start_ids(tokenizer, prompt)
    model.eval()  # turns dropout off; gpt.py samples with it on, a bug in the lecture code
    make_tokens = cached_tokens if window == "fast" else exact_tokens
    # A model padded past its tokenizer (--vocab-multiple) never samples the padding.
    tokens = make_tokens(model, ids, max_tokens, sampler or Sampler(), tokenizer.vocab_size)
    return _responses(tokens, tokenizer, max_tokens)


def _responses(
    tokens: Iterator[int], tokenizer: Tokenizer, max_tokens: int
) -> Iterator[GenerationResponse]:
    start = time.perf_counter()
    text = tokenizer.stream_decoder()
    for n, token in enumerate(tokens, 1):
        yield GenerationResponse(
            text=text.add(token) + (text.flush() if n == max_tokens else ""),
            token=token,
            generated=n,
            tokens_per_sec=n / (time.perf_counter() - start),
            peak_memory_mb=peak_memory_mb(),
        )


def generate(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    max_tokens: int,
    sampler: Sampler | None = None,
    window: str = "fast",
) -> GenerationResult:
    start = time.perf_counter()
    pieces = [
        r.text for r in stream_generate(model, tokenizer, prompt, max_tokens, sampler, window)
    ]
    seconds = time.perf_counter() - start
    return GenerationResult(
        text="".join(pieces),
        prompt_tokens=len(start_ids(tokenizer, prompt)),
        generated=len(pieces),
        seconds=seconds,
        tokens_per_sec=len(pieces) / seconds,
        peak_memory_mb=peak_memory_mb(),
    )
