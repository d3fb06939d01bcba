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
        (["{one_jsonl}", *BPE], "the corpus is one document"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli_in_process, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    (tmp_path / "t.txt").write_text(TEXT[:20_000])
    (tmp_path / "one.jsonl").write_text(json.dumps({"text": TEXT[:20_000]}) + "\n")
    names = {"empty": tmp_path / "empty", "bad_jsonl": tmp_path / "bad.jsonl",
             "text": tmp_path / "t.txt", "one_jsonl": tmp_path / "one.jsonl"}  # fmt: skip
    args = [a.format(**names) for a in args]
    result = prepare(cli_in_process, *args, "--out-dir", tmp_path / "out")
    assert result.returncode == 2, result.stderr
    assert message in one_line_error(result)


def test_a_dataset_without_the_datasets_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets now fails
    source = open_source("HuggingFaceFW/fineweb-edu", name="sample-10BT")
    with pytest.raises(UserError, match=r'pip install "mlx-gpt\[data\]"'):
        next(source.documents())


# ---- what a newcomer hit: small folders, a failed prepare, a damaged shard ----


def small_books(tmp_path: Path, n: int = 3) -> Path:
    """n text files of 20,000 characters each: a small folder, far under 10M tokens."""
    folder = tmp_path / "books"
    folder.mkdir()
    for i in range(n):
        (folder / f"b{i}.txt").write_text(TEXT[i * 20_000 : (i + 1) * 20_000])
    return folder


def test_a_small_folder_keeps_most_of_it_for_train(cli, tmp_path):
    out = tmp_path / "data"
    result = prepare(cli, small_books(tmp_path, n=5), "--out-dir", out, *BPE)
    assert result.returncode == 0, result.stderr
    meta, _ = read_back(out)
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    # whole documents up to a tenth of the bytes: the first of five files
    assert (val["documents"], train["documents"]) == (1, 4)
    assert val["tokens"] < train["tokens"]


def test_a_failed_prepare_leaves_nothing_and_a_rerun_with_other_settings_works(cli, tmp_path):
    one = small_books(tmp_path, n=1)
    out = tmp_path / "data"
    failed = prepare(cli, one, "--out-dir", out, *BPE)
    assert failed.returncode == 2
    assert "one document" in one_line_error(failed)
    assert not out.exists()
    # the advice: more documents; the same folder name then works with other settings
    (one / "b1.txt").write_text(TEXT[20_000:40_000])
    again = prepare(cli, one, "--out-dir", out, *BPE, "--val-tokens", "2000")
    assert again.returncode == 0, again.stderr
    assert read_back(out)[0]["splits"]["train"]["documents"] == 1


def test_a_stopped_prepare_with_other_settings_starts_over_with_overwrite(cli, tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "progress.json").write_text(json.dumps({"settings": {"source": "elsewhere"}}))
    (out / "val_000000.bin.tmp").write_bytes(b"\0\0")
    (out / "notes.txt").write_text("mine")
    books = small_books(tmp_path)
    refused = prepare(cli, books, "--out-dir", out, *BPE)
    assert refused.returncode == 2 and "--overwrite" in one_line_error(refused)
    result = prepare(cli, books, "--out-dir", out, *BPE, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (out / "notes.txt").read_text() == "mine"  # not a prepare's file: left alone
    assert not (out / "progress.json").exists() and not (out / "val_000000.bin.tmp").exists()
    assert read_back(out)[0]["source"] == str(books)


def test_a_truncated_shards_advice_works_when_followed(cli, tmp_path):
    import shlex

    out = tmp_path / "data"
    books = small_books(tmp_path)
    assert prepare(cli, books, "--out-dir", out, *BPE).returncode == 0
    whole = (out / "train_000000.bin").read_bytes()
    with open(out / "train_000000.bin", "r+b") as f:
        f.truncate(len(whole) // 2)
    trained = cli(str(ROOT / "train.py"), "--preset", "tiny", "--data", str(out),
                  "--max-iters", "2", "--out-dir", str(tmp_path / "run"))  # fmt: skip
    assert trained.returncode == 2
    advice = one_line_error(trained).split("prepare the corpus again: ")[1]
    # prepare itself, run again as it was, finds the damage too and gives the same advice
    same = prepare(cli, books, "--out-dir", out, *BPE)
    assert same.returncode == 2 and advice in one_line_error(same)
    words = shlex.split(advice)
    assert words[:3] == ["python", "-m", "mlx_gpt"]
    followed = cli(*words[1:])
    assert followed.returncode == 0, followed.stderr
    assert (out / "train_000000.bin").read_bytes() == whole


@pytest.mark.parametrize("damage", ["meta.json", "tokenizer.json"])
def test_a_damaged_folders_advice_works_when_followed(cli, tmp_path, damage):
    out = tmp_path / "data"
    books = small_books(tmp_path)
    assert prepare(cli, books, "--out-dir", out, *BPE).returncode == 0
    if damage == "meta.json":
        (out / damage).write_text("{ not json")
    else:
        (out / damage).unlink()
    train = (str(ROOT / "train.py"), "--preset", "tiny", "--data", str(out), "--max-iters", "2")
    trained = cli(*train, "--out-dir", str(tmp_path / "run"))
    assert trained.returncode == 2
    assert "prepare command again with --overwrite" in one_line_error(trained)
    assert prepare(cli, books, "--out-dir", out, *BPE, "--overwrite").returncode == 0
    again = cli(*train, "--out-dir", str(tmp_path / "run2"))
    assert again.returncode == 0, again.stderr
