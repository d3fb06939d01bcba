"""A BPE run as a user makes one: train, resume, generate, plot; and its bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mlx_gpt.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TRAIN, GENERATE = str(ROOT / "train.py"), str(ROOT / "generate.py")
BPE_FLAGS = ["--preset", "tiny", "--tokenizer", "bpe", "--vocab-size", "300"]
GPT2_FLAGS = ["--activation", "gelu_tanh", "--qkv-bias", "--tie-embeddings"]


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    from conftest import run_script

    out = tmp_path_factory.mktemp("runs") / "bpe"
    # Padded as build-nanogpt pads GPT-2's 50,257 to 50,304: 300 tokens in 320 rows. Every
    # test of this run (generate, resume, plot) goes through the padding.
    args = [TRAIN, *BPE_FLAGS, *GPT2_FLAGS, "--vocab-multiple", "64", "--max-iters", "30"]
    args += ["--out-dir", str(out)]
    result = run_script(*args)
    assert result.returncode == 0, result.stderr
    return out, result


def test_bpe_run_folder_holds_its_tokenizer_and_token_cache(bpe_run):
    out, result = bpe_run
    assert (out / "tokenizer.json").is_file() and not (out / "vocab.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["tokenizer"] == "bpe"
    assert config["model"]["vocab_size"] == 320 and config["model"]["tie_embeddings"] is True
    assert config["train"]["vocab_size"] == 300  # the tokenizer's
    train = np.load(out / "tokens" / "train.npy")
    assert train.dtype == np.uint16 and train.max() < 300
    meta = json.loads((out / "tokens" / "meta.json").read_text())
    assert meta["val_chars"] == 111_540  # the same val text as a char run's
    assert "chars/s" in result.stdout and "bits/char" in result.stdout


def test_val_bpc_is_total_nats_over_characters(bpe_run):
    out, _ = bpe_run
    meta = json.loads((out / "tokens" / "meta.json").read_text())
    val_tokens = len(np.load(out / "tokens" / "val.npy"))
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "val_loss" in r]
    assert evals
    for r in evals:
        expected = r["val_loss"] * val_tokens / meta["val_chars"] / math.log(2)
        assert r["val_bpc"] == pytest.approx(expected, rel=1e-9)
        assert r["val_bpc"] < r["val_loss"] / math.log(2)  # a token holds > 1 character


def test_char_run_logs_bpc_as_loss_over_ln2(tiny_run):
    out, _ = tiny_run
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "val_loss" in r]
    for r in evals:
        assert r["val_bpc"] == pytest.approx(r["val_loss"] / math.log(2), rel=1e-12)


def test_generate_counts_tokens_and_takes_any_prompt(bpe_run, cli):
    out, _ = bpe_run
    prompt = "Zoë says: ¡hola! 😀"  # not one of these characters need be in Shakespeare
    result = cli(GENERATE, "--out-dir", str(out), "--tokens", "40", "--prompt", prompt)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(prompt)
    assert "40 tokens (" in result.stderr


def test_plot_takes_the_bpc_metric_and_time_axis(bpe_run, tiny_run, cli, tmp_path):
    png = tmp_path / "bpc.png"
    args = ["-m", "mlx_gpt", "plot", str(bpe_run[0]), str(tiny_run[0]), "--output", str(png)]
    result = cli(*args, "--metric", "bpc", "--x", "time")
    assert result.returncode == 0, result.stderr
    assert png.stat().st_size > 10_000
    bad = cli(*args, "--metric", "perplexity")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_resume_reads_the_token_cache(bpe_run, monkeypatch, tmp_path):
    import shutil

    from mlx_gpt.config import TrainConfig
    from mlx_gpt.tokenizer import BPETokenizer
    from mlx_gpt.training import Loop, prepare

    run = tmp_path / "bpe"
    shutil.copytree(bpe_run[0], run)
    saved = json.loads((run / "config.json").read_text())["train"]
    cfg = TrainConfig.from_dict({**saved, "out_dir": str(run), "max_iters": 35})
    encode = BPETokenizer.encode

    def no_encoding(self, s):
        if len(s) > 100:  # a split; the samples' prompt (a newline) is encoded, rightly
            raise AssertionError("re-tokenized on resume")
        return encode(self, s)

    monkeypatch.setattr(BPETokenizer, "encode", no_encoding)
    start = prepare(cfg, resume=True)
    assert start.tokens_cached
    assert np.array_equal(start.splits.val.concatenated(), np.load(run / "tokens" / "val.npy"))
    result = Loop(start).run()
    assert result.step == 35


def test_resume_with_another_tokenizer_is_refused(bpe_run, cli):
    out, _ = bpe_run
    before = (out / "metrics.jsonl").read_bytes()
    for flags in (["--tokenizer", "char"], ["--vocab-size", "400"]):
        result = cli(TRAIN, "--out-dir", str(out), "--resume", "--max-iters", "40", *flags)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and "differs from the checkpoint" in result.stderr
    assert (out / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--vocab-size", "255"], "at least 256"),
        (["--vocab-size", "65536"], "above 65,535"),
        (["--activation", "swish"], "--activation must be one of"),
    ],
)
def test_bad_tokenizer_settings_exit_2_with_one_line(cli_in_process, tmp_path, flags, message):
    out = tmp_path / "run"
    result = cli_in_process(TRAIN, *BPE_FLAGS, *flags, "--out-dir", str(out))
    assert result.returncode == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1 and not out.exists()


def test_gpt2_tokenizer_offline_without_files_exits_2(cli, tmp_path):
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, TRAIN, "--preset", "tiny", "--tokenizer", "gpt2", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "--tokenizer-path" in result.stderr
    assert not out.exists()


def test_gpt2_tokenizer_from_local_files_trains(cli, tmp_path):
    from mlx_gpt.data.text import load_text
    from mlx_gpt.tokenizer import BPETokenizer

    files = tmp_path / "gpt2-files"
    files.mkdir()
    BPETokenizer.train(load_text()[:50_000], 320).hf.model.save(str(files))  # vocab + merges
    out = tmp_path / "run"
    result = cli(
        TRAIN, "--preset", "tiny", "--tokenizer", "gpt2", "--tokenizer-path", str(files),
        "--max-iters", "5", "--eval-interval", "5", "--out-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "config.json").read_text())["model"]["vocab_size"] == 320
    gen = cli(GENERATE, "--out-dir", str(out), "--tokens", "10")
    assert gen.returncode == 0 and "10 tokens" in gen.stderr
