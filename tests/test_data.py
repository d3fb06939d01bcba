import numpy as np
import pytest

from mlx_gpt.data.text import load_text
from mlx_gpt.data.tokens import Splits, Tokens, get_batch
from mlx_gpt.errors import UserError
from mlx_gpt.tokenizer import CharTokenizer


@pytest.fixture(scope="module")
def shakespeare():
    return load_text()


def test_shipped_text_is_tiny_shakespeare(shakespeare):
    assert len(shakespeare.encode("utf-8")) == 1_115_394
    assert shakespeare.startswith("First Citizen:")


def test_golden_tokenizer_vectors(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert tok.vocab_size == 65
    assert tok.encode("hello world") == [46, 43, 50, 50, 53, 1, 61, 53, 56, 50, 42]
    assert tok.encode(shakespeare[:9]) == [18, 47, 56, 57, 58, 1, 15, 47, 58]
    assert tok.decode(tok.encode("To be, or not")) == "To be, or not"


def test_tokenizer_round_trips_through_file(tmp_path):
    tok = CharTokenizer.from_text("héllo wörld\n")
    tok.save(tmp_path)
    again = CharTokenizer.load(tmp_path / "vocab.json")
    assert again.chars == tok.chars
    with pytest.raises(UserError, match="'z'"):
        again.encode("z")


def test_split_is_90_10_and_batches_are_shifted(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    splits = Splits.from_text(shakespeare, tok, block_size=8)
    assert len(splits.train) == int(0.9 * len(shakespeare))
    assert len(splits.train) + len(splits.val) == len(shakespeare)
    x, y = get_batch(splits.train, 4, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 8)
    assert np.array_equal(np.array(x)[:, 1:], np.array(y)[:, :-1])


def test_batches_are_reproducible_from_the_seed(shakespeare):
    data = Tokens([np.arange(1000, dtype=np.int32)])
    a = get_batch(data, 4, 8, np.random.default_rng(7))[0]
    b = get_batch(data, 4, 8, np.random.default_rng(7))[0]
    c = get_batch(data, 4, 8, np.random.default_rng(8))[0]
    assert np.array_equal(np.array(a), np.array(b))
    assert not np.array_equal(np.array(a), np.array(c))
