"""`train.py --data DIR`: a prepared corpus read in place, in each of the three layouts,
with the same losses as the text it came from, a memory that does not grow with it,
and one line for each thing that can be wrong with it."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_faults import digest, one_line_error

from mlx_gpt.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
SHAKESPEARE = ROOT / "mlx_gpt" / "assets" / "tinyshakespeare.txt"
TEXT = SHAKESPEARE.read_text(encoding="utf-8")
FAST = ["--preset", "tiny", "--max-iters", "20", "--eval-interval", "10", "--eval-iters", "4"]


def losses(run: Path) -> list[tuple]:
    return [
        (r["step"], r.get("train_loss"), r.get("val_loss"))
        for r in read_metrics(run / "metrics.jsonl")
        if "event" not in r
    ]


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """The reference: tiny on the text file itself."""
    out = tmp_path_factory.mktemp("text") / "run"
    result = subprocess.run(
        [sys.executable, TRAIN, *FAST, "--data", str(SHAKESPEARE), "--out-dir", str(out)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def write_nanogpt(folder: Path, with_meta: bool = True) -> None:
    """What nanoGPT's data/shakespeare_char/prepare.py writes: uint16 ids with tofile
    (native byte order, no header), and meta.pkl with vocab_size, itos and stoi."""
    folder.mkdir()
    chars = sorted(set(TEXT))
    stoi, itos = {ch: i for i, ch in enumerate(chars)}, dict(enumerate(chars))
    n = len(TEXT)
    np.array([stoi[c] for c in TEXT[: int(n * 0.9)]], dtype=np.uint16).tofile(folder / "train.bin")
    np.array([stoi[c] for c in TEXT[int(n * 0.9) :]], dtype=np.uint16).tofile(folder / "val.bin")
    if with_meta:
        with open(folder / "meta.pkl", "wb") as f:
            pickle.dump({"vocab_size": len(chars), "itos": itos, "stoi": stoi}, f)


def write_build_nanogpt(folder: Path, tokens: int = 30_000, high: int = 50_257) -> None:
    """What build-nanogpt's fineweb.py writes: np.save of uint16 GPT-2 ids, shard 0 val."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        split = "val" if i == 0 else "train"
        ids = rng.integers(0, high, tokens).astype(np.uint16)
        np.save(folder / f"edufineweb_{split}_{i:06d}.npy", ids)


def train(cli, data, out, *extra):
    return cli(TRAIN, *FAST, "--data", str(data), "--out-dir", str(out), *map(str, extra))


def test_a_prepared_shakespeare_trains_with_the_text_files_losses(cli, tmp_path, text_run):
    corpus = tmp_path / "corpus"
    result = cli("-m", "mlx_gpt", "prepare", str(SHAKESPEARE), "--out-dir", str(corpus),
                 "--tokenizer", "char")  # fmt: skip
    assert result.returncode == 0, result.stderr
    result = train(cli, corpus, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert losses(tmp_path / "run") == losses(text_run)
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert records[0]["val_bpc"] == read_metrics(text_run / "metrics.jsonl")[0]["val_bpc"]
    assert not (tmp_path / "run" / "tokens" / "train.npy").exists()  # nothing copied


def test_nanogpts_char_layout_trains_with_the_text_files_losses(cli, tmp_path, text_run):
    write_nanogpt(tmp_path / "shakespeare_char")
    result = train(cli, tmp_path / "shakespeare_char", tmp_path / "run")
    assert result.returncode == 0, result.stderr
    assert losses(tmp_path / "run") == losses(text_run)
    assert "no bits per character" in result.stderr
    assert "val_bpc" not in read_metrics(tmp_path / "run" / "metrics.jsonl")[0]
    generated = cli(str(ROOT / "generate.py"), "--out-dir", str(tmp_path / "run"),
                    "--checkpoint", "latest", "--tokens", "30")  # fmt: skip
    assert generated.returncode == 0 and len(generated.stdout) >= 30, generated.stderr


def test_build_nanogpts_shards_train_and_resume_checks_their_digest(cli, tmp_path):
    data = tmp_path / "edu"
    write_build_nanogpt(data)
    out = tmp_path / "run"
    result = train(cli, data, out, "--max-iters", "2", "--eval-interval", "2")
    assert result.returncode == 0, result.stderr
    assert json.loads((out / "tokens" / "scan.json").read_text())["max_id"] < 50_257
    generated = cli(str(ROOT / "generate.py"), "--out-dir", str(out), "--checkpoint", "latest")
    assert generated.returncode == 2 and "--tokenizer-path" in one_line_error(generated)
    (data / "edufineweb_train_000003.npy").write_bytes(
        (data / "edufineweb_train_000001.npy").read_bytes()
    )
    before = digest(out)
    result = cli(TRAIN, "--resume", "--out-dir", str(out), "--data", str(data), "--max-iters", "4")
    assert result.returncode == 2 and "--data-changed" in one_line_error(result)
    assert digest(out) == before


def test_a_resumed_run_on_a_corpus_logs_the_unbroken_runs_losses(cli, tmp_path):
    write_nanogpt(tmp_path / "data")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert train(cli, tmp_path / "data", whole).returncode == 0
    assert train(cli, tmp_path / "data", broken, "--max-iters", "10").returncode == 0
    result = cli(TRAIN, "--resume", "--out-dir", str(broken), "--max-iters", "20")
    assert result.returncode == 0, result.stderr
    assert losses(broken) == losses(whole)


RSS_PROBE = """
import sys
from mlx_gpt.cli import train_main
from mlx_gpt.machine.facts import Machine
sys.argv = ["train.py", *sys.argv[1:]]
try:
    train_main()
except SystemExit:
    pass
print("RSS", Machine.detect().peak_rss_mb())
"""


def write_ours(folder: Path, tokens: int, vocab: int = 65) -> None:
    """A corpus in our layout written straight from numpy (no tokenizing: fast)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    chars = sorted(set(TEXT))[:vocab]
    (folder / "vocab.json").write_text(json.dumps({"chars": chars}))
    from mlx_gpt.tokenizer import CharTokenizer

    splits = {}
    for split, n in (("train", tokens), ("val", 20_000)):
        rng.integers(0, vocab, n, dtype=np.uint16).tofile(folder / f"{split}_000000.bin")
        shard = {"file": f"{split}_000000.bin", "tokens": n, "sha256": "", "max_id": vocab - 1}
        splits[split] = {"tokens": n, "documents": 1, "chars": n, "bytes": n, "shards": [shard]}
    meta = {"tokenizer": {"kind": "char", "vocab_size": vocab,
                          "digest": CharTokenizer(chars).digest()},
            "dtype": "uint16", "max_id": vocab - 1, "splits": splits}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))


def test_resident_memory_does_not_grow_with_the_corpus(tmp_path):
    # RSS, as Activity Monitor and top show it: pages read through a memory map count in
    # it, and 200 steps of 64 random windows read through one touch most of 100 MB (the
    # map raised peak RSS by 94 MB here; read with pread, by 0 MB).
    rss = {}
    for name, tokens in (("small", 500_000), ("large", 50_000_000)):  # 1 MB and 100 MB
        write_ours(tmp_path / name, tokens)
        args = ["--preset", "tiny", "--max-iters", "200", "--batch-size", "64",
                "--eval-interval", "1000", "--eval-iters", "4", "--data", str(tmp_path / name),
                "--out-dir", str(tmp_path / f"run-{name}")]  # fmt: skip
        result = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, *args], capture_output=True, text=True, cwd=ROOT
        )
        assert result.returncode == 0 and "RSS" in result.stdout, result.stderr
        rss[name] = float(result.stdout.split("RSS")[-1])  # MB, in the OS's units made MB
    assert rss["large"] - rss["small"] < 40, rss


@pytest.mark.parametrize(
    "damage, message",
    [
        ("no_layout", "holds no corpus this project reads"),
        ("odd_bin", "has an odd number of bytes"),
        ("ids_over_vocab", "holds token id"),
        ("scanned_ids_over_vocab", "holds token id"),
        ("short_val", "the val split has"),
        ("char_tokenizer_flag", "a prepared corpus brings its tokenizer"),
    ],
)
def test_a_bad_corpus_is_one_line_exit_2_and_writes_nothing(
    cli_in_process, tmp_path, damage, message
):
    data = tmp_path / "data"
    extra = []
    if damage == "no_layout":
        data.mkdir()
        (data / "notes.txt").write_text("hello")
    elif damage == "odd_bin":
        write_nanogpt(data)
        with open(data / "train.bin", "ab") as f:
            f.write(b"\0")
    elif damage == "ids_over_vocab":
        write_ours(data, 10_000)
        meta = json.loads((data / "meta.json").read_text())
        meta["max_id"] = 70
        (data / "meta.json").write_text(json.dumps(meta))
    elif damage == "scanned_ids_over_vocab":
        write_nanogpt(data)
        np.full(100, 65, dtype=np.uint16).tofile(data / "val.bin")  # 65 chars: ids 0..64
    elif damage == "short_val":
        write_nanogpt(data)
        np.zeros(10, dtype=np.uint16).tofile(data / "val.bin")
    else:
        write_nanogpt(data)
        extra = ["--tokenizer", "bpe"]
    before = digest(data)
    result = train(cli_in_process, data, tmp_path / "run", *extra)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists() and digest(data) == before
