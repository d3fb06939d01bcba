"""README.md and docs/ against the package: every relative link resolves (to a file,
and to a heading where it names one), and every command a code block gives runs an
entry point that exists with flags its --help lists. So the docs cannot drift from
the CLI."""

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = BLOCK.sub("", page.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def links(page: Path) -> list[str]:
    text = BLOCK.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    for target in links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target} does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: {target} names no heading"


def commands(page: Path) -> list[list[str]]:
    """The `python ...` commands of the page's shell blocks, as words: continuation
    lines joined, comments dropped, `&&` and pipes split; `mlx.launch ... -- X` is X."""
    found = []
    for lang, body in BLOCK.findall(page.read_text(encoding="utf-8")):
        if lang not in ("bash", "sh", ""):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            part: list[str] = []
            for w in [*words, "&&"]:
                if w in ("&&", "|", ";", "||"):
                    if "--" in part and part[0] == "mlx.launch":
                        part = part[part.index("--") + 1 :]
                        part = part if part[:1] == ["python"] else ["python", *part]
                    if part[:1] in (["python"], ["python3"]) and part[1:3] != ["-m", "venv"]:
                        found.append(part[1:])
                    part = []
                else:
                    part.append(w)
    return found


def entry_point(args: list[str]) -> tuple[tuple[str, ...], list[str]]:
    """(the words that name the command, e.g. ("-m", "mlx_gpt", "import", "gpt2"), the
    rest)."""
    import typer

    from mlx_gpt.cli import app

    if args[:2] == ["-m", "mlx_gpt"]:
        group = typer.main.get_command(app)
        name = ["-m", "mlx_gpt"]
        rest = args[2:]
        while rest and hasattr(group, "commands") and rest[0] in group.commands:
            group = group.commands[rest[0]]
            name.append(rest.pop(0))
        return tuple(name), rest
    return (args[0],), args[1:]


@cache
def help_text(command: tuple[str, ...]) -> str:
    env = {**os.environ, "COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}
    result = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, f"{shlex.join(command)} --help: {result.stderr}"
    return result.stdout


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_in_the_docs_exists_with_its_flags(page):
    for args in commands(page):
        command, rest = entry_point(args)
        if command[0].endswith(".py"):
            assert (ROOT / command[0]).is_file(), f"{page.name}: no {command[0]}"
        text = help_text(command)
        for word in rest:
            flag = word.split("=")[0]
            if re.fullmatch(r"--[a-z][\w-]*", flag):
                assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                    f"{page.name}: {shlex.join(args)}: {flag} is not in "
                    f"`{shlex.join(command)} --help`"
                )


def test_the_command_finder_sees_launch_and_chains(tmp_path):
    page = tmp_path / "x.md"
    page.write_text(
        "```bash\nmlx.launch -n 2 -- python train.py --preset small\n"
        "pip install . && python generate.py --tokens 5 # x\n```\n"
    )
    assert commands(page) == [["train.py", "--preset", "small"], ["generate.py", "--tokens", "5"]]


def test_the_readmes_python_runs_on_a_trained_run(cli, tiny_run, tmp_path):
    # The snippet imports the package's modules by their paths: a module that moves
    # without the front page moving with it fails here.
    out, _ = tiny_run
    blocks = [
        body for lang, body in BLOCK.findall((ROOT / "README.md").read_text()) if lang == "python"
    ]
    assert blocks, "README.md has no python block"
    for body in blocks:
        script = tmp_path / "snippet.py"
        script.write_text(body.replace('"out/small"', repr(str(out))))
        ran = cli(str(script), cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert len(ran.stdout) == 200  # the 200 characters it asks for, streamed
