"""Tokenizers: text <-> token ids. Three kinds, one interface.

* char: the lecture's, one token per character of the corpus (vocab.json).
* bpe:  a byte-level BPE trained on the training split with Hugging Face `tokenizers`
        (tokenizer.json). Byte-level: every UTF-8 text encodes, none is unknown.
* gpt2: GPT-2's own 50,257-token byte-level BPE, from local files or the hub.

Each has `kind`, `vocab_size`, `encode`, `decode`, `save(folder)`, `digest()` and
`stream_decoder()`, which turns tokens into text as they come without ever splitting a
multi-byte character (a byte-level token can hold half an emoji).
"""

from __future__ import annotations

import json
from pathlib import Path

from mlx_gpt.data.text import text_digest
from mlx_gpt.errors import UserError

KINDS = ("char", "bpe", "gpt2")
CHAR_FILE = "vocab.json"
HF_FILE = "tokenizer.json"
MIN_BPE_VOCAB = 256  # a byte-level BPE starts from the 256 byte values
MAX_VOCAB = 65_535  # token ids are stored as uint16 (data.TOKEN_DTYPE)
GPT2_HUB_NAME = "gpt2"
GPT2_FILES_HINT = (
    "download vocab.json and merges.txt (or tokenizer.json) from "
    "https://huggingface.co/openai-community/gpt2 and pass their folder with --tokenizer-path"
)


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of the corpus's characters."""

    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        try:
            return [self.stoi[c] for c in s]
        except KeyError:
            unknown = sorted(set(s) - set(self.stoi))
            shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            noun = "character" if len(unknown) == 1 else f"{len(unknown)} characters"
            verb = "is" if len(unknown) == 1 else "are"
            raise UserError(f"{noun} {shown} {verb} not in the vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def save(self, folder: str | Path) -> None:
        Path(folder, CHAR_FILE).write_text(json.dumps({"chars": self.chars}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["chars"])

    def digest(self) -> str:
        return text_digest(json.dumps(self.chars, ensure_ascii=False))

    def stream_decoder(self) -> CharStream:
        return CharStream(self.chars)


class CharStream:
    def __init__(self, chars: list[str]):
        self.chars = chars

    def add(self, token: int) -> str:
        return self.chars[token]

    def flush(self) -> str:
        return ""


class BPETokenizer:
    """A byte-level BPE held by a Hugging Face `tokenizers.Tokenizer`."""

    def __init__(self, tokenizer, kind: str = "bpe"):
        self.hf = tokenizer
        self.kind = kind

    @classmethod
    def train(
        cls, text: str | list[str], vocab_size: int, special_tokens: list[str] = ()
    ) -> BPETokenizer:
        """Learn merges on `text` (or on a list of documents) up to vocab_size tokens
        (fewer if the text runs out of pairs), after the `special_tokens`. The same
        text and size give the same tokenizer."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen or not
            special_tokens=list(special_tokens),
            show_progress=False,
        )
        tokenizer.train_from_iterator([text] if isinstance(text, str) else text, trainer)
        return cls(tokenizer, "bpe")

    @classmethod
    def load(cls, path: str | Path, kind: str = "bpe") -> BPETokenizer:
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_file(str(path)), kind)
        except Exception as e:  # tokenizers raises its own Exception subclass
            raise UserError(f"{path} is not a tokenizer.json `tokenizers` can read ({e})") from None

    @classmethod
    def gpt2(cls, source: str | None = None) -> BPETokenizer:
        """GPT-2's tokenizer from a folder (tokenizer.json, or vocab.json + merges.txt), a
        tokenizer.json file, or a hub name (default gpt2) through huggingface_hub."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        from mlx_gpt.weights import hub

        files = [HF_FILE, "vocab.json", "merges.txt"]
        path = hub.local_or_fetch(source or GPT2_HUB_NAME, files, GPT2_FILES_HINT)
        if path.is_file():
            return cls.load(path, "gpt2")
        if (path / HF_FILE).is_file():
            return cls.load(path / HF_FILE, "gpt2")
        vocab, merges = path / "vocab.json", path / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise UserError(f"{path} has neither tokenizer.json nor vocab.json + merges.txt")
        tokenizer = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        return cls(tokenizer, "gpt2")

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, s: str) -> list[int]:
        return self.hf.encode(s, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def save(self, folder: str | Path) -> None:
        self.hf.save(str(Path(folder, HF_FILE)))

    def digest(self) -> str:
        return text_digest(self.hf.to_str())

    def stream_decoder(self) -> BPEStream:
        return BPEStream(self)


class BPEStream:
    """Text for each new token, held back while it ends inside a UTF-8 character.

    Tokens since the last complete character are decoded together; while that text ends
    in U+FFFD (a cut character), nothing is released. A run of 8 tokens that never
    completes (the model emitted invalid UTF-8) is released as it decodes.
    """

    LIMIT = 8

    def __init__(self, tokenizer: BPETokenizer):
        self.tokenizer = tokenizer
        self.pending: list[int] = []

    def add(self, token: int) -> str:
        self.pending.append(token)
        text = self.tokenizer.decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < self.LIMIT:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        text, self.pending = self.tokenizer.decode(self.pending), []
        return text


Tokenizer = CharTokenizer | BPETokenizer


def build_tokenizer(
    kind: str, text: str, train_text: str, vocab_size: int, path: str | None
) -> Tokenizer:
    """A new run's tokenizer. char: the characters of the whole text (so val has no
    unknown ones, as in gpt.py); bpe: merges learned on the training split only."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "bpe":
        return BPETokenizer.train(train_text, vocab_size)
    return BPETokenizer.gpt2(path)


def load_tokenizer(folder: str | Path, kind: str = "char") -> Tokenizer:
    """The tokenizer a run folder holds: tokenizer.json (bpe, gpt2) or vocab.json (char)."""
    folder = Path(folder)
    if (folder / HF_FILE).is_file():
        return BPETokenizer.load(folder / HF_FILE, kind if kind != "char" else "bpe")
    if (folder / CHAR_FILE).is_file():
        return CharTokenizer.load(folder / CHAR_FILE)
    raise UserError(f"{folder} has no tokenizer ({CHAR_FILE} or {HF_FILE}); is it a run folder?")


def tokenizer_to_json(tokenizer: Tokenizer) -> dict:
    """A tokenizer as JSON, to send to other ranks (see ranks.py)."""
    if isinstance(tokenizer, CharTokenizer):
        return {"kind": "char", "chars": tokenizer.chars}
    return {"kind": tokenizer.kind, "json": tokenizer.hf.to_str()}


def tokenizer_from_json(d: dict) -> Tokenizer:
    if d["kind"] == "char":
        return CharTokenizer(d["chars"])
    from tokenizers import Tokenizer as HFTokenizer

    return BPETokenizer(HFTokenizer.from_str(d["json"]), d["kind"])
