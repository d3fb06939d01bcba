import os
import subprocess
import sys
from pathlib import Path

import pytest

# Where the tests assert float32 results to 1e-4 or closer (parity with PyTorch, exact
# resume), MLX must compute float32 as float32: on CUDA it runs float32 matmuls as TF32
# unless told otherwise. Set before mlx.core loads; the scripts the tests run inherit it.
os.environ["MLX_ENABLE_TF32"] = "0"

import mlx_gpt  # noqa: F401  (first: on Linux it must load OpenBLAS before mlx.core)

ROOT = Path(__file__).resolve().parents[1]


def run_script(*args: str, cwd: Path | None = None, timeout: float = 300):
    """Run `python <script or -m module> args` as a user would; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def cli():
    return run_script


def run_in_process(*args: str, cwd: Path | None = None):
    """`run_script`'s command run inside this interpreter, for the error cases: the
    same click command, arguments, exit code, stdout and stderr (an exception that
    would have been a traceback is one, in stderr), without starting Python and
    importing MLX again, which is most of such a test's time. Each command keeps one
    error test that runs as a subprocess (run_script), where nothing is shared."""
    import traceback

    import mlx.core as mx
    import typer
    from click.testing import CliRunner

    import mlx_gpt.cli

    group = typer.main.get_command(mlx_gpt.cli.app)
    script = Path(args[0]).name
    if script in ("train.py", "generate.py"):
        command, argv, prog = group.commands[script[: -len(".py")]], list(args[1:]), script
    elif args[:2] == ("-m", "mlx_gpt"):
        command, argv, prog = group, list(args[2:]), "python -m mlx_gpt"
    else:
        raise ValueError(f"not a command run_in_process knows: {args}")
    limit = mx.set_memory_limit(mx.device_info().get("memory_size", 2**40))
    mx.set_memory_limit(limit)
    here, saved_argv = Path.cwd(), sys.argv
    os.chdir(cwd or ROOT)
    sys.argv = [prog, *argv]
    try:
        result = CliRunner().invoke(command, argv, prog_name=prog, catch_exceptions=True)
    finally:
        os.chdir(here)
        sys.argv = saved_argv
        mx.set_memory_limit(limit)  # what a command set is not left to the next test
    stderr, code = result.stderr, result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
        code = 1
    return subprocess.CompletedProcess([sys.executable, *args], code, result.stdout, stderr)


@pytest.fixture
def cli_in_process():
    return run_in_process


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One trained tiny run (CLI, as a user runs it), shared by tests that only read it."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = run_script(str(ROOT / "train.py"), "--preset", "tiny", "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


@pytest.fixture(scope="session")
def hf_gpt2(tmp_path_factory):
    """A tiny random GPT2LMHeadModel saved with save_pretrained, and GPT-2-format
    tokenizer files (vocab.json + merges.txt) of the same 300 tokens."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from mlx_gpt.data.text import load_text
    from mlx_gpt.tokenizer import BPETokenizer

    folder = tmp_path_factory.mktemp("hf-gpt2")
    BPETokenizer.train(load_text()[:100_000], 300).hf.model.save(str(folder))
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=2, tie_word_embeddings=True
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


@pytest.fixture(scope="session")
def imported_gpt2(hf_gpt2, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "gpt2"
    result = run_script("-m", "mlx_gpt", "import", "gpt2", str(hf_gpt2[0]), "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    return out
