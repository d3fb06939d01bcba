"""Tokenizers: byte-level BPE round trips, determinism, streaming, the GPT-2 files, bpc."""

import math

import numpy as np
import pytest

from mlx_gpt.data.text import load_text, split_text
from mlx_gpt.data.tokens import Splits
from mlx_gpt.errors import UserError
from mlx_gpt.tokenizer import BPETokenizer, CharTokenizer, build_tokenizer, load_tokenizer

GOLDEN = [
    "",
    "\n",
    "\n\n\n",
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n",
    "héllo wörld, naïve café, Ærøskøbing, ñandú",
    "emoji 😀👍🏽 and a flag 🇫🇷 and a family 👨‍👩‍👧",
    "  two leading spaces, a tab\there, and trailing  ",
    "日本語のテキスト and Ελληνικά and עברית",
    "\r\nwindows line ends\r\n",
]


@pytest.fixture(scope="module")
def shakespeare():
    return load_text()


@pytest.fixture(scope="module")
def bpe(shakespeare):
    return BPETokenizer.train(split_text(shakespeare)[0], 512)


@pytest.mark.parametrize("text", GOLDEN)
def test_bpe_round_trips_any_utf8_text(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


def test_bpe_compresses_the_text_it_learned(bpe, shakespeare):
    assert bpe.vocab_size == 512
    val = split_text(shakespeare)[1]
    assert len(val) / len(bpe.encode(val)) > 1.7  # characters per token on unseen text (1.88)


def test_bpe_training_is_deterministic(shakespeare):
    train = split_text(shakespeare)[0][:200_000]
    a, b = BPETokenizer.train(train, 400), BPETokenizer.train(train, 400)
    assert a.digest() == b.digest()
    assert a.encode(train[:5000]) == b.encode(train[:5000])
    assert BPETokenizer.train(train, 300).digest() != a.digest()


def test_bpe_learns_from_the_training_split_only():
    # "qz" fills the val split only: no merge of it may exist
    text = "the cat sat on the mat. " * 90 + "qzqzqzqzqz" * 24
    train, val = split_text(text)
    assert "qz" not in train and "qzqz" in val
    tok = build_tokenizer("bpe", text, train, 300, None)
    assert len(tok.encode("qz")) == 2
    assert len(tok.encode(" the")) == 1


def test_bpe_is_saved_and_found_in_a_run_folder(bpe, tmp_path):
    bpe.save(tmp_path)
    again = load_tokenizer(tmp_path, "bpe")
    assert isinstance(again, BPETokenizer) and again.digest() == bpe.digest()
    assert not (tmp_path / "vocab.json").exists()


@pytest.mark.parametrize("text", GOLDEN[3:])
def test_streaming_never_splits_a_character(bpe, text):
    ids = bpe.encode(text)
    stream = bpe.stream_decoder()
    pieces = [stream.add(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_streaming_holds_back_a_cut_emoji(bpe):
    ids = bpe.encode("😀")
    assert len(ids) > 1  # four bytes, no merge of them in Shakespeare
    stream = bpe.stream_decoder()
    assert [stream.add(i) for i in ids] == [""] * (len(ids) - 1) + ["😀"]


def test_char_streaming_is_one_character_per_token():
    tok = CharTokenizer.from_text("abc\n")
    stream = tok.stream_decoder()
    assert [stream.add(i) for i in tok.encode("cab\n")] == ["c", "a", "b", "\n"]


def test_char_tokenizer_names_every_unknown_character():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UserError, match="2 characters 'x', 'é' are not in the vocabulary"):
        tok.encode("abxcé")


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory, shakespeare):
    """A vocabulary in GPT-2's file format (vocab.json + merges.txt), made offline."""
    folder = tmp_path_factory.mktemp("gpt2-files")
    BPETokenizer.train(shakespeare[:100_000], 400).hf.model.save(str(folder))
    assert {p.name for p in folder.iterdir()} == {"vocab.json", "merges.txt"}
    return folder


@pytest.mark.parametrize("text", GOLDEN)
def test_gpt2_files_load_and_round_trip(gpt2_files, text):
    tok = BPETokenizer.gpt2(str(gpt2_files))
    assert tok.kind == "gpt2" and tok.vocab_size == 400
    assert tok.decode(tok.encode(text)) == text


def test_gpt2_from_the_hub_offline_says_how_to_get_the_files(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="offline.*--tokenizer-path"):
        BPETokenizer.gpt2("gpt2")
    with pytest.raises(UserError, match="does not exist"):
        BPETokenizer.gpt2(str(tmp_path / "missing" / "folder"))


class PairTokenizer:
    """A hand-made tokenizer: every two characters are one token."""

    kind = "pairs"

    def encode(self, s):
        return [ord(s[i]) for i in range(0, len(s), 2)]


def test_bits_per_char_from_the_per_token_sum_and_the_character_count():
    text = "abcdefghij" * 3  # 30 characters: train 27, val 3
    splits = Splits.from_text(text, PairTokenizer(), block_size=1)
    assert (len(splits.train), splits.train_chars) == (14, 27)
    assert (len(splits.val), splits.val_chars) == (2, 3)
    # a mean of 1.5 nats per token over 2 val tokens is 3 nats over 3 characters
    assert splits.bits_per_char("val", 1.5) == pytest.approx(1 / math.log(2))
    assert splits.bits_per_char("train", 2.0) == pytest.approx(2.0 * 14 / 27 / math.log(2))


def test_bits_per_char_of_a_char_tokenizer_is_loss_over_ln2(shakespeare):
    splits = Splits.from_text(shakespeare, CharTokenizer.from_text(shakespeare), 8)
    for loss in (0.5, 1.4823, 4.17):
        assert splits.bits_per_char("val", loss) == pytest.approx(loss / math.log(2), rel=1e-12)


def test_the_split_is_on_text_so_val_is_the_same_for_every_tokenizer(shakespeare, bpe):
    by_char = Splits.from_text(shakespeare, CharTokenizer.from_text(shakespeare), 8)
    by_bpe = Splits.from_text(shakespeare, bpe, 8)
    assert by_char.val_chars == by_bpe.val_chars == len(split_text(shakespeare)[1])
    val = by_bpe.val.concatenated()
    assert bpe.decode(val.tolist()) == split_text(shakespeare)[1]
    assert val.dtype == np.uint16
