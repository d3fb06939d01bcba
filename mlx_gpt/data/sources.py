"""The documents of a corpus, in a fixed order, for `prepare` to tokenize.

A SOURCE is one of:

    a text file          one document, cut 90/10 into train and val as gpt.py cuts it
    a folder or a glob   of .txt (a document each), .jsonl (a `text` field per line)
                         and .parquet (a `text` column) files, in sorted order
    a dataset name       a Hugging Face dataset, streamed with the `datasets` library
                         (pip install "mlx-gpt[data]"), e.g. HuggingFaceFW/fineweb-edu

Every source can start again from its n-th document (`documents(skip=n)`), which is how
a prepare stopped midway goes on.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlx_gpt.data.text import load_text, split_text
from mlx_gpt.errors import UserError, first_line

SUFFIXES = (".txt", ".jsonl", ".parquet")
DATA_EXTRA = 'pip install "mlx-gpt[data]" (the `datasets` library)'


@dataclass
class Source:
    spec: str  # the SOURCE as given
    files: list[Path] = field(default_factory=list)  # a local source's files
    text_field: str = "text"
    dataset: dict | None = None  # a Hugging Face dataset's load_dataset arguments
    single_text: bool = False  # one text file: gpt.py's val (last 10 %), then its train

    @property
    def total_bytes(self) -> int | None:
        """What a local source holds, for the progress bar's ETA; None for a dataset."""
        return sum(f.stat().st_size for f in self.files) if self.files else None

    def documents(self, skip: int = 0) -> Iterator[tuple[str, int]]:
        """(document, bytes of the source it took), from the skip-th document on."""
        if self.single_text:
            train, val = split_text(load_text(self.files[0], flag="SOURCE"))
            for text in [val, train][skip:]:
                yield text, len(text.encode("utf-8"))
        elif self.dataset is not None:
            yield from self._dataset_documents(skip)
        else:
            for path in self.files:
                for text, size in _file_documents(path, self.text_field):
                    if skip:
                        skip -= 1
                        continue
                    yield text, size

    def _dataset_documents(self, skip: int) -> Iterator[tuple[str, int]]:
        try:
            import datasets
        except ImportError:
            raise UserError(f"a Hugging Face dataset as SOURCE needs {DATA_EXTRA}") from None
        datasets.logging.set_verbosity_error()
        try:
            stream = datasets.load_dataset(**self.dataset, streaming=True)
            if skip:
                stream = stream.skip(skip)
            for row in stream:
                text = row.get(self.text_field)
                if not isinstance(text, str):
                    raise UserError(f"{self.spec} has no text field {self.text_field!r}")
                yield text, len(text.encode("utf-8"))
        except UserError:
            raise
        except Exception as e:  # datasets raises many kinds: not found, offline, schema
            raise UserError(f"cannot stream {self.spec} ({first_line(e)})") from None


def open_source(
    spec: str,
    *,
    name: str | None = None,
    split: str = "train",
    data_files: list[str] | None = None,
    text_field: str = "text",
) -> Source:
    """What SOURCE names: a file, a folder, a glob, or else a Hugging Face dataset."""
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix in (".jsonl", ".parquet"):
            return Source(spec, [path], text_field)
        return Source(spec, [path], text_field, single_text=True)
    if path.is_dir() or glob.has_magic(spec):
        found = sorted(path.rglob("*")) if path.is_dir() else sorted(map(Path, glob.glob(spec)))
        files = [f for f in found if f.is_file() and f.suffix in SUFFIXES]
        if not files:
            raise UserError(f"{spec} holds no {', '.join(SUFFIXES)} files")
        return Source(spec, files, text_field)
    if spec.startswith((".", "/", "~")) or path.suffix in SUFFIXES or spec.count("/") > 1:
        raise UserError(f"{spec} does not exist; give a text file, a folder, or a dataset name")
    dataset = {"path": spec, "name": name, "split": split}
    if data_files:
        dataset["data_files"] = data_files
    return Source(spec, text_field=text_field, dataset=dataset)


def _file_documents(path: Path, text_field: str) -> Iterator[tuple[str, int]]:
    if path.suffix == ".txt":
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        if text:
            yield text, path.stat().st_size
    elif path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield _json_text(line, path, number, text_field), len(line)
    else:
        yield from _parquet_documents(path, text_field)


def _json_text(line: bytes, path: Path, number: int, text_field: str) -> str:
    try:
        text = json.loads(line).get(text_field)
    except (ValueError, AttributeError):
        raise UserError(f"{path} line {number} is not a JSON object") from None
    if not isinstance(text, str):
        raise UserError(f"{path} line {number} has no string field {text_field!r}")
    return text


def _parquet_documents(path: Path, text_field: str) -> Iterator[tuple[str, int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading .parquet files needs {DATA_EXTRA}") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow's ArrowInvalid and kin
        raise UserError(
            f"{path} is not a parquet file pyarrow can read ({first_line(e)})"
        ) from None
    if text_field not in table.schema_arrow.names:
        raise UserError(f"{path} has no column {text_field!r}")
    size = path.stat().st_size
    rows = max(table.metadata.num_rows, 1)
    for batch in table.iter_batches(columns=[text_field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text:
                yield text, size // rows
