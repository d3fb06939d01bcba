"""Weights from elsewhere: GPT-2 in Hugging Face's layout, nanoGPT's ckpt.pt, and
fine-tuning from any run (--init-from). Every source is built here, offline."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_gpt.data.text import load_text
from mlx_gpt.generation.sampling import Sampler
from mlx_gpt.metrics import read_metrics
from mlx_gpt.runs.folder import RunFolder

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
TRAIN, GENERATE = str(ROOT / "train.py"), str(ROOT / "generate.py")
MODULE = ["-m", "mlx_gpt"]


def one_line_error(result, code=2):
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


# ---- Hugging Face GPT-2 ----


def test_gpt2_import_is_a_run_folder(imported_gpt2):
    config = json.loads((imported_gpt2 / "config.json").read_text())
    assert config["source"].startswith("huggingface:")
    assert config["train"]["tokenizer"] == "gpt2"
    model = config["model"]
    assert (model["activation"], model["qkv_bias"], model["tie_embeddings"]) == (
        "gelu_tanh",
        True,
        True,
    )
    assert (model["block_size"], model["n_layer"], model["vocab_size"]) == (64, 2, 300)
    for name in ("tokenizer.json", "best/model.safetensors", "latest/model.safetensors"):
        assert (imported_gpt2 / name).is_file(), name


def test_gpt2_logits_match_transformers(hf_gpt2, imported_gpt2):
    _, hf_model = hf_gpt2
    model, _ = RunFolder(imported_gpt2).load_model()
    ids = np.random.default_rng(0).integers(0, 300, (2, 40))
    ours = np.array(model(mx.array(ids)))
    with torch.no_grad():
        theirs = hf_model(torch.tensor(ids)).logits.numpy()
    assert np.abs(ours - theirs).max() < 1e-4


def test_gpt2_greedy_samples_match_transformers(hf_gpt2, imported_gpt2):
    from mlx_gpt.generation.decoding import cached_tokens

    _, hf_model = hf_gpt2
    model, _ = RunFolder(imported_gpt2).load_model()
    prompt = [17, 42, 256, 3]
    ours = list(cached_tokens(model, prompt, 50, Sampler(temperature=0.0)))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(50):
            ids.append(int(hf_model(torch.tensor([ids])).logits[0, -1].argmax()))
    assert ours == ids[len(prompt) :]


def test_generate_from_the_imported_run_in_float16(imported_gpt2, cli):
    result = cli(GENERATE, "--out-dir", str(imported_gpt2), "--tokens", "20", "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    assert "float16 weights] 20 tokens" in result.stderr  # as the weights were cast
    bad = cli(GENERATE, "--out-dir", str(imported_gpt2), "--dtype", "float8")
    assert "--dtype must be one of" in one_line_error(bad)


def test_an_imported_run_is_fine_tuned_not_resumed(imported_gpt2, cli):
    result = cli(TRAIN, "--out-dir", str(imported_gpt2), "--resume", "--max-iters", "5")
    assert "--init-from" in one_line_error(result)


@pytest.mark.parametrize("damage", ["no-weights", "llama", "not-a-folder"])
def test_bad_gpt2_sources(hf_gpt2, tmp_path, cli_in_process, damage):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(hf_gpt2[0], src)
    if damage == "no-weights":
        (src / "model.safetensors").unlink()
        expected = "no model.safetensors"
    elif damage == "llama":
        config = json.loads((src / "config.json").read_text())
        (src / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
        expected = "'llama' model, not GPT-2"
    else:
        src = tmp_path / "missing" / "folder"
        expected = "does not exist"
    out = tmp_path / "out"
    result = cli_in_process(*MODULE, "import", "gpt2", str(src), "--out-dir", str(out))
    assert expected in one_line_error(result)
    assert not out.exists()


def test_hub_name_offline_and_not_cached(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, *MODULE, "import", "gpt2", "gpt2-medium", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    message = one_line_error(result)
    assert "offline" in message and "import gpt2 PATH" in message
    assert not out.exists()


# ---- nanoGPT ----


def nanogpt_checkpoint(
    folder: Path, bias: bool, chars: list[str] | None, vocab: int | None = None, block: int = 16
) -> object:
    """A ckpt.pt as nanoGPT's train.py writes it, from the PyTorch baseline configured as
    nanoGPT's model (exact GELU, tied, `bias`), compiled (`_orig_mod.`), with the
    causal-mask buffers; and the meta.pkl of `chars`. Without chars it is a model of
    `vocab` GPT-2-like tokens, as nanoGPT trains on OpenWebText (50,304: padded)."""
    from torch_gpt import TorchGPT

    torch.manual_seed(1)
    vocab = len(chars) if chars else vocab
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=block, bias=bias, vocab_size=vocab)
    model = TorchGPT(
        vocab_size=vocab, block_size=block, n_layer=2, n_head=2, n_embd=32, dropout=0.0,
        activation="gelu", qkv_bias=bias, bias=bias, tie_embeddings=True,
    ).eval()  # fmt: skip
    with torch.no_grad():  # biases nonzero, so a dropped one would show
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    state = {f"_orig_mod.transformer.{k}": v for k, v in model.state_dict().items()}
    state["_orig_mod.lm_head.weight"] = model.wte.weight
    for i in range(2):
        mask = torch.tril(torch.ones(block, block))[None, None]
        state[f"_orig_mod.transformer.h.{i}.attn.bias"] = mask
    torch.save(
        {
            "model": state,
            "optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
            "model_args": {**args, "dropout": 0.0},
            "iter_num": 5000,
            "best_val_loss": torch.tensor(1.4697),
            "config": {"dataset": "shakespeare_char", "learning_rate": 1e-3, "compile": True},
        },
        folder / "ckpt.pt",
    )
    if chars:
        meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars))}
        meta["stoi"] = {c: i for i, c in meta["itos"].items()}
        (folder / "meta.pkl").write_bytes(pickle.dumps(meta))
    return model


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_import_matches_its_logits(tmp_path, cli, bias):
    chars = sorted(set(load_text()))
    torch_model = nanogpt_checkpoint(tmp_path, bias, chars)
    out = tmp_path / "nano"
    result = cli(
        *MODULE, "import", "nanogpt", str(tmp_path / "ckpt.pt"),
        "--meta", str(tmp_path / "meta.pkl"), "--out-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    model, tokenizer = RunFolder(out).load_model()
    assert tokenizer.chars == chars
    ids = np.random.default_rng(3).integers(0, len(chars), (2, 16))
    with torch.no_grad():
        theirs = torch_model(torch.tensor(ids)).numpy()
    assert np.abs(np.array(model(mx.array(ids))) - theirs).max() < 1e-4
    gen = cli(GENERATE, "--out-dir", str(out), "--prompt", "ROMEO:", "--tokens", "30")
    assert gen.returncode == 0 and gen.stdout.startswith("ROMEO:")


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_meta_pkl_that_would_run_code_is_refused(tmp_path, cli):
    chars = sorted(set(load_text()))
    nanogpt_checkpoint(tmp_path, True, chars)
    marker = tmp_path / "pwned"
    evil = {"vocab_size": 65, "itos": dict(enumerate(chars)), "x": Exploit(marker)}
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps(evil))
    result = cli(
        *MODULE, "import", "nanogpt", str(tmp_path / "ckpt.pt"),
        "--meta", str(tmp_path / "meta.pkl"), "--out-dir", str(tmp_path / "out"),
    )  # fmt: skip
    message = one_line_error(result)
    assert "plain dicts, strings and ints" in message and "system" in message
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_ckpt_without_model_args_is_refused(tmp_path, cli):
    torch.save({"model": {}, "iter_num": 1}, tmp_path / "ckpt.pt")
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: "a"}}))
    result = cli(
        *MODULE, "import", "nanogpt", str(tmp_path / "ckpt.pt"),
        "--meta", str(tmp_path / "meta.pkl"), "--out-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert "no model_args" in one_line_error(result)


# ---- fine-tuning: --init-from ----

OTHER_TEXT = "".join(line.lower() + "\n" for line in load_text().splitlines()[::-1][:6000])


def test_init_from_starts_at_the_source_models_loss(tiny_run, tmp_path, cli):
    from mlx_gpt.config import TrainConfig
    from mlx_gpt.data.tokens import Splits
    from mlx_gpt.training.evaluation import estimate_loss

    source, _ = tiny_run
    before = tree_digest(source)
    text = tmp_path / "other.txt"
    text.write_text(OTHER_TEXT)
    out = tmp_path / "ft"
    result = cli(
        TRAIN, "--init-from", str(source), "--data", str(text), "--out-dir", str(out),
        "--max-iters", "5", "--eval-interval", "5", "--eval-iters", "3", "--log-interval", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = read_metrics(out / "metrics.jsonl")[0]
    assert first["step"] == 0
    # the source's own model, on the new text, with the same evaluation batches
    model, tokenizer = RunFolder(source).load_model("best")
    cfg = TrainConfig.from_dict(json.loads((out / "config.json").read_text())["train"])
    splits = Splits.from_text(OTHER_TEXT, tokenizer, cfg.block_size)
    expected = estimate_loss(model, splits, cfg)["val"]
    assert first["val_loss"] == pytest.approx(expected, abs=1e-5)
    assert len(read_metrics(out / "metrics.jsonl")) == 6  # steps 0..5
    assert tree_digest(source) == before  # the source is only read
    assert json.loads((out / "vocab.json").read_text()) == json.loads(
        (source / "vocab.json").read_text()
    )


def test_init_from_crops_the_block_and_finetune_preset(tiny_run, tmp_path, cli):
    source, _ = tiny_run
    text = tmp_path / "other.txt"
    text.write_text(OTHER_TEXT)
    out = tmp_path / "ft"
    result = cli(
        TRAIN, "--preset", "finetune", "--init-from", str(source), "--data", str(text),
        "--block-size", "16", "--batch-size", "4", "--grad-accum", "2", "--max-iters", "2",
        "--eval-iters", "2",
        "--out-dir", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["block_size"] == 16 and config["model"]["n_embd"] == 32
    assert config["train"]["learning_rate"] == 3e-5 and config["train"]["lr_decay_iters"] == 0
    assert config["train"]["grad_accum"] == 2  # the flag over the preset's 32
    model, _ = RunFolder(out).load_model("latest")
    assert model.wpe.weight.shape == (16, 32)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--block-size", "64"], "larger than"),
        (["--n-layer", "3"], "--init-from keeps the source's model"),
        (["--data", "UNKNOWN"], "'Ω', '😀' are not in the vocabulary"),
    ],
)
def test_init_from_refuses(tiny_run, tmp_path, cli_in_process, flags, expected):
    source, _ = tiny_run
    unknown = tmp_path / "unknown.txt"
    unknown.write_text(OTHER_TEXT + "Ω 😀\n")
    flags = [str(unknown) if f == "UNKNOWN" else f for f in flags]
    out = tmp_path / "ft"
    result = cli_in_process(TRAIN, "--init-from", str(source), "--out-dir", str(out), *flags)
    assert expected in one_line_error(result)
    assert not out.exists()


def test_init_from_a_folder_that_is_not_a_run(tmp_path, cli):
    result = cli(TRAIN, "--init-from", str(tmp_path), "--out-dir", str(tmp_path / "ft"))
    assert "is not a run folder" in one_line_error(result)
    result = cli(TRAIN, "--preset", "finetune", "--out-dir", str(tmp_path / "ft"))
    assert "add --init-from" in one_line_error(result)
