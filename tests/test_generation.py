import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_gpt.generation.decoding import cached_tokens, exact_tokens, generate, stream_generate
from mlx_gpt.generation.sampling import Sampler, top_k_filter, top_p_filter
from mlx_gpt.model.gpt import GPT, GPTConfig
from mlx_gpt.tokenizer import CharTokenizer

GENERATE = str(Path(__file__).resolve().parents[1] / "generate.py")
CONFIG = GPTConfig(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1)
# The modern block (rotary positions, which the cache must offset), its projections
# random rather than zero so that every layer speaks.
MODERN = GPTConfig(
    vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.1,
    architecture="modern", qk_norm=True, softcap=15.0, activation="relu2", bias=False,
)  # fmt: skip


@pytest.fixture(scope="module", params=[CONFIG, MODERN], ids=["gpt2", "modern"])
def model(request):
    mx.random.seed(0)
    m = GPT(request.param)
    m.eval()
    return m


@pytest.fixture(scope="module")
def tokenizer():
    from mlx_gpt.data.text import load_text

    return CharTokenizer.from_text(load_text())


def test_cache_equals_full_forward_at_every_position(model):
    idx = mx.random.randint(0, 65, (1, 16))
    full = np.array(model(idx))
    cache = model.make_cache()
    prefix = 5  # a prefill of several tokens, then one at a time
    steps = [np.array(model(idx[:, :prefix], cache))]
    for t in range(prefix, 16):
        steps.append(np.array(model(idx[:, t : t + 1], cache)))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


def crop_loop(model, ids, n, sampler):
    """gpt.py's generate(), written out plainly."""
    ids = list(ids)
    for _ in range(n):
        context = ids[-model.config.block_size :]
        logits = model(mx.array([context]))
        ids.append(sampler(logits[:, -1, :]).item())
    return ids[-n:]


def test_exact_window_equals_the_plain_crop_loop(model):
    n = 50  # well past block_size 16
    ours = list(exact_tokens(model, [1, 2, 3], n, Sampler(seed=5)))
    assert ours == crop_loop(model, [1, 2, 3], n, Sampler(seed=5))


@pytest.mark.parametrize(
    "settings", [dict(temperature=0.0), dict(temperature=1.0), dict(top_k=5, top_p=0.9)]
)
def test_fast_equals_exact_while_the_sequence_fits(model, settings):
    # fast samples inside its compiled step; exact samples outside: the same tokens
    prompt = [7, 8, 9, 10]
    n = 40
    fast = list(cached_tokens(model, prompt, n, Sampler(**settings, seed=3)))
    exact = list(exact_tokens(model, prompt, n, Sampler(**settings, seed=3)))
    fits = model.config.block_size - len(prompt) + 1  # tokens drawn from a context <= block_size
    assert fast[:fits] == exact[:fits]
    assert len(fast) == n


def test_same_seed_same_text_other_seed_other_text(model, tokenizer):
    a = generate(model, tokenizer, "ROMEO:", 60, Sampler(seed=1)).text
    b = generate(model, tokenizer, "ROMEO:", 60, Sampler(seed=1)).text
    c = generate(model, tokenizer, "ROMEO:", 60, Sampler(seed=2)).text
    assert a == b and a != c and len(a) == 60


def test_greedy_is_deterministic_and_takes_the_argmax(model):
    a = list(cached_tokens(model, [5], 30, Sampler(temperature=0, seed=1)))
    b = list(cached_tokens(model, [5], 30, Sampler(temperature=0, seed=99)))
    assert a == b
    logits = model(mx.array([[5]]))[0, -1]
    assert a[0] == int(np.argmax(np.array(logits)))


def test_streamed_text_equals_returned_text(model, tokenizer):
    streamed = "".join(
        r.text for r in stream_generate(model, tokenizer, "To be", 40, Sampler(seed=4))
    )
    assert streamed == generate(model, tokenizer, "To be", 40, Sampler(seed=4)).text
    result = generate(model, tokenizer, "", 20, Sampler(seed=4))
    assert result.generated == 20 and result.tokens_per_sec > 0


def test_top_k_keeps_the_k_largest():
    logits = mx.array([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = np.isfinite(np.array(top_k_filter(logits, 2)))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert np.isfinite(np.array(top_k_filter(logits, 5))).all()


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    probs = np.array([[0.05, 0.5, 0.3, 0.15]])
    logits = mx.array(np.log(probs))
    keep = lambda p: np.isfinite(np.array(top_p_filter(logits, p))).tolist()[0]  # noqa: E731
    assert keep(0.5) == [False, True, False, False]
    assert keep(0.6) == [False, True, True, False]
    assert keep(0.9) == [False, True, True, True]
    assert keep(0.01) == [False, True, False, False]  # the most likely always stays
    assert keep(1.0) == [True, True, True, True]


def test_sampling_draws_only_what_the_filters_keep():
    logits = mx.array([[2.0, 2.0, 1.5, -1.0]])
    sampler = Sampler(temperature=1.0, top_k=2, seed=0)
    assert {sampler(logits).item() for _ in range(200)} == {0, 1}
    sampler = Sampler(temperature=0.5, top_p=0.3, seed=0)  # 0 and 1 tie; 0 sorts first
    assert {sampler(logits).item() for _ in range(50)} <= {0, 1}


# --- the command line ---


def test_stdout_is_exactly_prompt_plus_n_characters(cli, tiny_run):
    out, _ = tiny_run
    result = cli(GENERATE, "--out-dir", str(out), "--tokens", "300", "--prompt", "ROMEO:")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ROMEO:") and len(result.stdout) == len("ROMEO:") + 300
    assert "300 characters" in result.stderr and "tok/s" in result.stderr
    again = cli(GENERATE, "--out-dir", str(out), "--tokens", "300", "--prompt", "ROMEO:")
    assert again.stdout == result.stdout  # default seed


def test_output_file_window_and_samples(cli, tiny_run, tmp_path):
    out, _ = tiny_run
    target = tmp_path / "sample.txt"
    args = ["--out-dir", str(out), "--tokens", "50", "--window", "exact", "--seed", "3"]
    result = cli(GENERATE, *args, "--output", str(target), "--num-samples", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    samples = target.read_text().split("\n---------------\n")
    assert [len(s) for s in samples] == [50, 50] and samples[0] != samples[1]


def test_generate_finds_the_latest_run_under_out(cli, tiny_run, tmp_path):
    shutil.copytree(tiny_run[0], tmp_path / "out" / "tiny")
    result = cli(GENERATE, "--tokens", "10", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == 10


BAD = [
    (["--tokens", "0"], "--tokens"),
    (["--top-k", "0"], "--top-k"),
    (["--top-p", "0"], "--top-p"),
    (["--top-p", "1.5"], "--top-p"),
    (["--temperature", "-1"], "--temperature"),
    (["--window", "wide"], "--window"),
    (["--prompt", "Zebra\u00e9"], "'\u00e9'"),
    (["--prompt-file", "/nonexistent.txt"], "--prompt-file /nonexistent.txt does not exist"),
    (["--checkpoint", "oldest"], "--checkpoint"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_exit_2(cli_in_process, tiny_run, args, message):
    result = cli_in_process(GENERATE, "--out-dir", str(tiny_run[0]), *args)
    assert result.returncode == 2
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_no_run_says_train_first(cli, tmp_path):
    for args in ([], ["--out-dir", str(tmp_path / "nothing")]):
        result = cli(GENERATE, *args, cwd=tmp_path)
        assert result.returncode == 2 and "python train.py" in result.stderr
        assert "Traceback" not in result.stderr


def test_checkpoint_that_does_not_match_its_config(cli, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["n_layer"] = 3
    (run / "config.json").write_text(json.dumps(config))
    result = cli(GENERATE, "--out-dir", str(run), "--tokens", "5")
    assert result.returncode == 2 and "does not match" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_library_never_imports_torch(cli):
    modules = "mlx_gpt.cli, mlx_gpt.training, mlx_gpt.generation.decoding"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    result = cli("-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize("window", ["fast", "exact"])
def test_a_padded_model_never_samples_its_padding(tokenizer, window):
    # 65 characters, 128 rows (--vocab-multiple 64); the padded rows are made the most
    # likely by far, so only the mask to the tokenizer's 65 keeps them out.
    mx.random.seed(0)
    padded = GPT(GPTConfig(**{**CONFIG.__dict__, "vocab_size": 128}))
    bias = np.zeros(128, dtype=np.float32)
    bias[65:] = 1e4
    padded.lm_head.bias = mx.array(bias)
    tokens = [
        r.token
        for r in stream_generate(padded, tokenizer, "ROMEO:", 40, Sampler(seed=2), window=window)
    ]
    assert len(tokens) == 40 and max(tokens) < 65
