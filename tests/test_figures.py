"""The figures README.md and docs/ quote against the results files bench/ wrote
(bench/figures.py): each one equals its file's, each file was written by a benchmark
with its machine, command, commit and date, and no measured figure is left unsourced."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import figures  # noqa: E402

WRITERS = {"compare": "compare.py", "memory": "memory.py", "prepare": "prepare.py",
           "samples-cost": "samples_cost.py", "presets": "presets.py",
           "recipes": "recipes.py"}  # fmt: skip


@pytest.mark.parametrize("page", figures.PAGES, ids=lambda p: p.name)
def test_every_figure_a_page_quotes_is_its_results_files(page):
    problems = [p for f in figures.figures(page) if (p := figures.disagreement(f))]
    assert problems == []


@pytest.mark.parametrize("page", figures.PAGES, ids=lambda p: p.name)
def test_every_measured_figure_on_a_page_names_its_source(page):
    assert figures.unsourced(page) == []


def quoted_files() -> set[str]:
    return {f.file for page in figures.PAGES for f in figures.figures(page)}


def test_each_quoted_file_was_written_whole_by_its_benchmark():
    assert quoted_files(), "the docs quote no results file"
    for name in sorted(quoted_files()):
        meta = json.loads((figures.RESULTS / name).read_text())["meta"]
        kind = next(k for k in WRITERS if name.startswith(k + "-"))
        assert meta["command"][0] == WRITERS[kind], name
        assert meta["commit"] and meta["date"] and meta["cpu"] and meta["versions"]["mlx"], name
        assert meta["uncommitted_changes"] is False, f"{name} was measured on changed code"


def test_bench_results_holds_only_the_files_the_docs_quote():
    kept = {p.name for p in figures.RESULTS.iterdir()}
    quoted = quoted_files()
    stray = {n for n in kept - quoted if Path(n).with_suffix(".json").name not in quoted}
    assert stray == set()


PAGE = """# A page

## Speed

Measured (`bench/results/x.json`): a step takes 12.3 ms<!-- from x.json: {rows[name=a].ms} -->,
{ratio}x<!-- from x.json: {rows[name=b].ms} / {rows[name=a].ms} --> the other's.

```
finished | 1,234 tok/s
```
<!-- "1,234 tok/s" from x.json: {rows[name=a].tps} -->
"""
RESULTS = {
    "meta": {},
    "rows": [{"name": "a", "ms": 12.3, "tps": 1234.4}, {"name": "b", "ms": 24.6}],
}


def check(tmp_path, page: str, results: dict = RESULTS) -> list[str]:
    (tmp_path / "x.json").write_text(json.dumps(results))
    found = figures.figures(tmp_path / "page.md", page)
    return [p for f in found if (p := figures.disagreement(f, tmp_path))]


def test_the_check_sees_a_figure_that_differs_from_its_file(tmp_path):
    good = PAGE.replace("{ratio}", "2.00")
    assert check(tmp_path, good) == []
    assert check(tmp_path, good.replace("12.3 ms", "12.4 ms")) == [
        "page.md:5: the text says 12.4, x.json gives 12.3"
    ]
    assert len(check(tmp_path, good.replace("2.00x", "1.99x"))) == 1
    assert len(check(tmp_path, good.replace("1,234 tok/s", "1,235 tok/s"))) == 1
    slower = {**RESULTS, "rows": [{**RESULTS["rows"][0], "ms": 13.0}, RESULTS["rows"][1]]}
    assert len(check(tmp_path, good, slower)) == 2  # the figure and the ratio
    hidden = good.replace("(`bench/results/x.json`)", "")
    assert all("name it in the text" in p for p in check(tmp_path, hidden))


def test_a_measured_figure_without_a_source_is_found(tmp_path):
    page = tmp_path / "page.md"
    good = PAGE.replace("{ratio}", "2.00")
    assert figures.unsourced(page, good) == []
    assert figures.unsourced(page, good + "It peaks at 60 MB.\n") == [
        "page.md:12: '60 MB' has no source"
    ]
    assert figures.unsourced(page, good + "43 MB of gradients <!-- not measured -->\n") == []


def test_fill_writes_each_files_value_into_the_text(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE.replace("12.3 ms", "0.0 ms").replace("{ratio}", "0.00"))
    (tmp_path / "x.json").write_text(json.dumps(RESULTS))
    figures.fill(page, tmp_path)
    assert check(tmp_path, page.read_text()) == []
