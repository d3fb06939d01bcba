"""The figures README.md and docs/ quote, checked against the results files they come from.

    python bench/figures.py            # every quoted figure, its file, and whether they agree
    python bench/figures.py --fill     # after re-measuring: write each file's value into the
                                       # text (then read the sentences around them again)

A measured figure in the docs carries, right after it, a comment that the rendered page
does not show and that says where it comes from:

    the lecture model at 12,095 ms<!-- from compare-xeon-2026-12-07.json:
    {results[config=lecture,label=MLX].ms_per_step} --> a step

The file is in bench/results/, written whole by the benchmark that measured it. Inside
the braces is a path into its JSON: keys joined by dots, `[N]` for a list's N-th item, and
`[key=value,...]` for the one item of a list whose fields have those values. Around the
paths may be arithmetic (`+ - * / ( )` and numbers), for a ratio or a figure derived from
measured ones. The figure is the number just before the comment, or, where it cannot be
(inside a code block), the text in quotes at the comment's start, found before it:

    <!-- "11,408 tok/s" from presets-xeon-2026-12-07.json: {small.tokens_per_sec} -->

It agrees when the value, rounded to the decimals the text shows, is the number the text
shows. Figures that are arithmetic on a model's shape rather than measurements are on a
line that says so with `<!-- not measured -->`; every other number with a unit of measure
(ms, MB, tok/s, GFLOP/s, days, a ratio like 0.55x ...) must carry a `from` comment.
"""

from __future__ import annotations

import ast
import json
import operator
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

TAG = re.compile(
    r'<!--\s*(?:"(?P<quoted>[^"]+)"\s+)?from\s+(?P<file>[\w.+-]+):\s*(?P<expr>.*?)-->', re.S
)
NUMBER = r"\d[\d,]*(?:\.\d+)?"
# The number just before a tag: the figure, then at most a unit's few characters.
BEFORE = re.compile(rf"({NUMBER})[^\d<>\n]{{0,14}}$")
# A number with a unit of measure, which must be sourced or marked not measured.
MEASURE = re.compile(
    rf"(?<![\w.,\-/]){NUMBER}(?:x\b|\s?(?:%|ms/step|ms\b|s/step|tok/s|tokens/s|tokens a second"
    r"|GFLOP/s|TFLOP/s|MB\b|GB\b|MiB\b|GiB\b|minutes?\b|min\b|hours?\b|days\b|years\b|seconds\b))"
)
HEADING = re.compile(r"^#+ ", re.M)
OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


@dataclass(frozen=True)
class Figure:
    page: str
    line: int
    text: str  # as the page shows it, e.g. "12,095"
    file: str
    expr: str
    section: str  # the visible text of the section it is in (between headings)
    quoted: str | None = None  # the figure as a quoting comment gives it


def select(data, path: str):
    """The value at `path` (see the module docstring) in a results file's JSON."""
    for part in re.findall(r"\[[^\]]*\]|[^.\[\]]+", path.strip()):
        if not part.startswith("["):
            data = data[part]
        elif re.fullmatch(r"\[-?\d+\]", part):
            data = data[int(part[1:-1])]
        else:
            wanted = dict(kv.split("=", 1) for kv in part[1:-1].split(","))
            found = [d for d in data if all(str(d.get(k)) == v for k, v in wanted.items())]
            if len(found) != 1:
                raise KeyError(f"{part} matches {len(found)} items, not one")
            data = found[0]
    return data


def evaluate(expr: str, data) -> float:
    """The arithmetic of a tag, each {path} replaced by its value in `data`."""
    values = []

    def hole(match):
        values.append(float(select(data, match.group(1))))
        return f"_v{len(values) - 1}"

    tree = ast.parse(re.sub(r"\{([^{}]*)\}", hole, expr).strip(), mode="eval")

    def run(node):
        if isinstance(node, ast.Expression):
            return run(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](run(node.left), run(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -run(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.Name) and node.id.startswith("_v"):
            return values[int(node.id[2:])]
        raise ValueError(f"not arithmetic: {ast.unparse(node)}")

    return run(tree)


def visible(text: str) -> str:
    return re.sub(r"<!--.*?-->", "", text, flags=re.S)


def figures(page: Path, text: str | None = None) -> list[Figure]:
    """Every sourced figure of a page (its text read from `page` unless given)."""
    text = page.read_text(encoding="utf-8") if text is None else text
    starts = [0, *(m.start() for m in HEADING.finditer(text)), len(text)]
    found = []
    for tag in TAG.finditer(text):
        before = text[: tag.start()]
        if tag["quoted"]:
            at = before.rfind(tag["quoted"])
            numbers = re.findall(NUMBER, tag["quoted"]) if at >= 0 else []
            shown = numbers[-1] if numbers else None  # "1 → 2.42 GB" quotes 2.42
        else:
            match = BEFORE.search(visible(before[-200:]))
            shown = match.group(1) if match else None
        if shown is None:
            raise ValueError(
                f"{page.name}:{before.count(chr(10)) + 1}: no figure before {tag[0]!r}"
            )
        start = max(s for s in starts if s <= tag.start())
        end = min(s for s in starts if s > tag.start())
        found.append(
            Figure(
                page.name,
                before.count("\n") + 1,
                shown,
                tag["file"],
                " ".join(tag["expr"].split()),
                visible(text[start:end]),
                tag["quoted"],
            )
        )
    return found


def disagreement(figure: Figure, results: Path = RESULTS) -> str | None:
    """Why a figure and its file disagree, or None when they agree."""
    where = f"{figure.page}:{figure.line}"
    if figure.file not in figure.section:
        return f"{where}: {figure.text} names {figure.file} only in a comment: name it in the text"
    path = results / figure.file
    if not path.exists():
        return f"{where}: {figure.text} comes from {figure.file}, which is not in bench/results/"
    try:
        value = evaluate(figure.expr, json.loads(path.read_text()))
    except (KeyError, IndexError, TypeError, ValueError, SyntaxError) as e:
        return f"{where}: {figure.text}: {figure.expr} in {figure.file}: {e}"
    decimals = len(figure.text.partition(".")[2])
    if f"{value:.{decimals}f}" != figure.text.replace(",", ""):
        return f"{where}: the text says {figure.text}, {figure.file} gives {value:.{decimals}f}"
    return None


def unsourced(page: Path, text: str | None = None) -> list[str]:
    """Numbers with a unit of measure that carry no `from` comment, on lines not marked
    arithmetic: each is a figure whose source the page does not give."""
    text = page.read_text(encoding="utf-8") if text is None else text
    quoted = [f.quoted for f in figures(page, text) if f.quoted]
    missing = []
    for n, line in enumerate(text.splitlines(), 1):
        if "<!-- not measured" in line:
            continue
        for m in MEASURE.finditer(line):
            if re.match(r"[^<\d\n]{0,14}<!--\s*(\"[^\"]*\"\s+)?from\s", line[m.end() :]):
                continue  # sourced right after it
            if any(q in line and m.group(0) in q for q in quoted):
                continue  # sourced by a comment that quotes it (in a code block)
            missing.append(f"{page.name}:{n}: {m.group(0)!r} has no source")
    return missing


def formatted(value: float, like: str) -> str:
    """`value` written as the figure `like` is: its decimals, and thousands separators
    where the text uses them or the value reaches 1,000."""
    decimals = len(like.partition(".")[2])
    comma = "," if "," in like or abs(value) >= 1000 else ""
    return f"{value:{comma}.{decimals}f}"


def fill(page: Path, results: Path = RESULTS) -> int:
    """Write into `page` each sourced figure's value from its file (figures given by a
    quoting comment are left to the writer); return how many changed."""
    text = page.read_text(encoding="utf-8")
    changed, out, last = 0, [], 0
    for tag in TAG.finditer(text):
        if tag["quoted"] or not (results / tag["file"]).exists():
            continue  # a quoted figure is the writer's; a missing file, the check's to report
        match = BEFORE.search(text[: tag.start()])
        value = evaluate(" ".join(tag["expr"].split()),
                         json.loads((results / tag["file"]).read_text()))  # fmt: skip
        new = formatted(value, match.group(1))
        if text[: match.start(1)].endswith("step "):
            new = new.replace(",", "")  # a step number, as the logs write it
        changed += new != match.group(1)
        out += [text[last : match.start(1)], new]
        last = match.end(1)
    page.write_text("".join(out) + text[last:], encoding="utf-8")
    return changed


def main() -> int:
    if sys.argv[1:] == ["--fill"]:
        for page in PAGES:
            if n := fill(page):
                print(f"{page.name}: {n} figure(s) rewritten from their files")
        return 0
    bad = 0
    for page in PAGES:
        for figure in figures(page):
            problem = disagreement(figure)
            bad += problem is not None
            print(
                problem
                or f"{figure.page}:{figure.line}: {figure.text} = {figure.file}: {figure.expr}"
            )
        for problem in unsourced(page):
            bad += 1
            print(problem)
    print(f"{bad} problem(s)" if bad else "every figure agrees with its file")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
