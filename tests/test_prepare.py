"""`python -m mlx_gpt prepare`: every kind of SOURCE, the shards and meta.json it writes,
a prepare killed with kill -9 and run again, and its bad inputs."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_faults import digest, one_line_error

from mlx_gpt.data.sources import open_source
from mlx_gpt.errors import UserError
from mlx_gpt.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "mlx_gpt" / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")
WORDS = np.array(sorted(set(TEXT.split())))  # an array: rng.choice would convert a list each call
BPE = ["--tokenizer", "bpe", "--vocab-size", "300", "--tokenizer-sample", "200000"]


def documents(n: int, seed: int = 0, words: int = 60) -> list[str]:
    """Documents of random Shakespeare words, each unlike the others."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(5, words))) for _ in range(n)]


def prepare(cli, *args):
    return cli("-m", "mlx_gpt", "prepare", *map(str, args))


def read_back(out: Path) -> tuple[dict, list[str]]:
    """meta.json, and the documents the shards spell: val's, then train's, split at
    every end-of-text id (which leads each document)."""
    meta = json.loads((out / "meta.json").read_text())
    tokenizer = load_tokenizer(out, meta["tokenizer"]["kind"])
    eot = tokenizer.hf.token_to_id("<|endoftext|>")
    docs = []
    for split in ("val", "train"):
        ids = np.concatenate(
            [
                np.fromfile(out / s["file"], dtype=meta["dtype"])
                for s in meta["splits"][split]["shards"]
            ]
        )
        assert ids[0] == eot
        cuts = np.flatnonzero(ids == eot)
        docs += [tokenizer.decode(part[1:]) for part in np.split(ids, cuts[1:])]
    return meta, docs


def write_sources(tmp_path: Path, docs: list[str]) -> dict[str, Path]:
    folder = tmp_path / "txt"
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"{i:03d}.txt").write_text(doc)
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return {"folder": folder, "jsonl": jsonl}


@pytest.mark.parametrize("kind", ["folder", "jsonl", "parquet", "datasets"])
def test_each_source_kind_gives_its_documents_back_in_order(cli, tmp_path, kind):
    docs = documents(300)
    sources = write_sources(tmp_path, docs)
    extra = []
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        source = tmp_path / "docs.parquet"
        pq.write_table(pa.table({"text": docs}), source, row_group_size=64)
    elif kind == "datasets":
        source, extra = "json", ["--data-files", sources["jsonl"]]
    else:
        source = sources[kind]
    out = tmp_path / "out"
    result = prepare(cli, source, *extra, "--out-dir", out, *BPE, "--val-tokens", 2000,
                     "--shard-tokens", 3000)  # fmt: skip
    assert result.returncode == 0, result.stderr
    meta, back = read_back(out)
    assert back == docs
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    assert train["documents"] + val["documents"] == len(docs)
    assert val["tokens"] >= 2000 and len(train["shards"]) == -(-train["tokens"] // 3000)
    assert val["chars"] == sum(len(d) for d in docs[: val["documents"]])
    assert meta["max_id"] == max(
        int(np.fromfile(out / s["file"], dtype=meta["dtype"]).max())
        for split in meta["splits"].values()
        for s in split["shards"]
    )
    assert not list(out.glob("*.tmp")) and not (out / "progress.json").exists()


def test_a_text_file_is_cut_as_gpt_py_cuts_it(cli, tmp_path):
    out = tmp_path / "out"
    text = TEXT[:200_000]
    (tmp_path / "t.txt").write_text(text)
    result = prepare(cli, tmp_path / "t.txt", "--out-dir", out, "--tokenizer", "char")
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    chars = sorted(set(text))
    train = np.fromfile(out / "train_000000.bin", dtype=np.uint16)
    val = np.fromfile(out / "val_000000.bin", dtype=np.uint16)
    n = int(0.9 * len(text))
    assert "".join(chars[i] for i in train) == text[:n]
    assert "".join(chars[i] for i in val) == text[n:]
    assert (meta["splits"]["val"]["chars"], meta["splits"]["train"]["chars"]) == (len(text) - n, n)


def test_prepare_again_on_a_finished_folder_changes_nothing(cli, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "t.txt").write_text(TEXT[:50_000])
    assert prepare(cli, tmp_path / "t.txt", "--out-dir", out, "--tokenizer", "char").returncode == 0
    before = digest(out)
    result = prepare(cli, tmp_path / "t.txt", "--out-dir", out, "--tokenizer", "char")
    assert result.returncode == 0 and "prepared already" in result.stderr
    assert digest(out) == before


def test_kill_9_mid_shard_then_the_same_command_gives_the_same_corpus(cli, tmp_path):
    docs = documents(12_000, seed=1, words=120)
    source = write_sources(tmp_path, docs)["jsonl"]
    args = [source, *BPE, "--val-tokens", 5000, "--shard-tokens", 20_000]
    assert prepare(cli, *args, "--out-dir", tmp_path / "whole").returncode == 0
    broken = tmp_path / "broken"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlx_gpt", "prepare", *map(str, args), "--out-dir", str(broken)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(broken.glob("train_*.bin"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, "prepare finished before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (broken / "meta.json").exists()  # it was stopped midway
    result = prepare(cli, *args, "--out-dir", broken)
    assert result.returncode == 0, result.stderr
    assert digest(broken) == digest(tmp_path / "whole")


def test_a_full_disk_exits_4_and_keeps_the_whole_shards(cli, tmp_path):
    source = write_sources(tmp_path, documents(3000, seed=2))["jsonl"]
    args = f"{source} {' '.join(BPE)} --val-tokens 5000 --shard-tokens 60000"
    out = tmp_path / "out"
    command = f"ulimit -f 100; exec {sys.executable} -m mlx_gpt prepare {args} --out-dir {out}"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 4, result.stderr
    assert "free some space" in one_line_error(result)
    progress = json.loads((out / "progress.json").read_text())
    whole = [s["file"] for split in progress["splits"].values() for s in split["shards"]]
    assert whole and not list(out.glob("*.tmp"))
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(whole)
    assert prepare(cli, *args.split(), "--out-dir", out).returncode == 0  # room again: it ends
    assert (out / "meta.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.txt"], "does not exist"),
        (["{empty}"], "holds no .txt, .jsonl, .parquet files"),
        (["{bad_jsonl}", *BPE], "line 2 is not a JSON object"),
        (["{text}", "--tokenizer", "bpe", "--vocab-size", "10"], "--vocab-size must be between"),
        (["{text}", "--shard-tokens", "0"], "--shard-tokens must be at least 1"),
        (["{text}", "--tokenizer", "word"], "--tokenizer must be one of"),
        (["{jsonl}", *BPE, "--val-tokens", "100000000"], "the train split is empty"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    (tmp_path / "t.txt").write_text(TEXT[:20_000])
    jsonl = write_sources(tmp_path, documents(50))["jsonl"]
    names = {"empty": tmp_path / "empty", "bad_jsonl": tmp_path / "bad.jsonl",
             "text": tmp_path / "t.txt", "jsonl": jsonl}  # fmt: skip
    args = [a.format(**names) for a in args]
    result = prepare(cli, *args, "--out-dir", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert message in one_line_error(result)


def test_a_dataset_without_the_datasets_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now fails
    source = open_source("HuggingFaceFW/fineweb-edu", name="sample-10BT")
    with pytest.raises(UserError, match=r'pip install "mlx-gpt\[data\]"'):
        next(source.documents())
