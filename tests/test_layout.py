"""The package as it ships: no import cycle among its modules, and a wheel that holds
every subpackage (a plain `pip install .` installs the wheel, not this folder)."""

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mlx_gpt"


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside a function."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts).removesuffix(".__init__")] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                for alias in node.names:  # `from mlx_gpt import checkpoint` is a module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name) :] + [name]
        if name in done:
            return None
        for dep in sorted(graph[name]):
            if found := visit(dep, [*path, name]):
                return found
        done.add(name)
        return None

    for name in sorted(graph):
        if found := visit(name, []):
            return found
    return None


def test_no_module_imports_itself_back_even_lazily():
    graph = _import_graph()
    assert {"mlx_gpt.training.start", "mlx_gpt.cli.train", "mlx_gpt.settings"} <= set(graph)
    assert "mlx_gpt.runs.folder" in graph["mlx_gpt.settings"]  # the graph sees imports at all
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_lazy_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]


def test_the_wheel_holds_every_subpackage(tmp_path):
    # Built from a copy: a build/ folder left in the checkout would hide a missing package.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns(".git", "build", "*.egg-info", "__pycache__", ".venv", "out")
    shutil.copytree(ROOT, source, ignore=skip)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = tmp_path.glob("mlx_gpt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob("*")
        if p.is_file() and p.suffix in {".py", ".c", ".txt"} and "__pycache__" not in p.parts
    }
    assert expected <= names, sorted(expected - names)
