import hashlib
import json
import sys
from pathlib import Path

import pytest

from mlx_gpt.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")
TEXT = str(ROOT / "mlx_gpt" / "assets" / "tinyshakespeare.txt")
RUN_FILES = [
    "config.json",
    "vocab.json",
    "metrics.jsonl",
    "best/model.safetensors",
    "best/optimizer.safetensors",
    "best/state.json",
    "latest/model.safetensors",
    "latest/optimizer.safetensors",
    "latest/state.json",
]


def test_tiny_run_writes_the_whole_run_folder(tiny_run):
    out, result = tiny_run
    for name in RUN_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert "30,529 parameters" in result.stdout
    assert "BLAS" in result.stdout and "device" in result.stdout
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["preset"] == "tiny" and config["model"]["vocab_size"] == 65
    assert "--preset" in config["command"] and config["mlx_gpt_version"]
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(0, 101, 5))
    fields = {"step", "tokens", "train_loss", "lr", "tokens_per_sec", "ms_per_step"}
    assert fields | {"peak_memory_mb", "elapsed_s"} <= set(records[-1])
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 25, 50, 75, 100]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5  # it learned
    best = json.loads((out / "best" / "state.json").read_text())
    assert best["best_val_loss"] == min(r["val_loss"] for r in evals)


@pytest.fixture(scope="module")
def train_help():
    """`python train.py --help` as a user runs it, once for the tests that read it."""
    from conftest import run_script

    result = run_script(TRAIN, "--help")
    assert result.returncode == 0, result.stderr
    return result


def test_help_explains_flags_in_panels(train_help):
    result = train_help
    for text in ("--preset", "--resume", "--config", "Model", "Optimization", "Examples"):
        assert text in result.stdout


def test_help_labels_options_with_a_type_and_flags_with_none(train_help):
    result = train_help
    rows = {line.split()[1]: line for line in result.stdout.splitlines()
            if line.startswith("│ --")}  # fmt: skip
    assert "<int>" in rows["--max-iters"] and "<str>" in rows["--preset"]
    for flag in ("--resume", "--show-config", "--help", "--tie-embeddings"):
        assert "<bool>" not in rows[flag], rows[flag]


def test_a_model_that_is_mostly_vocabulary_says_so_in_the_banner():
    from mlx_gpt.cli.train import vocabulary_note
    from mlx_gpt.model.gpt import GPT
    from mlx_gpt.presets import preset_config

    tiny = preset_config("tiny")
    big_vocab = tiny.model_config(15_485)
    note = vocabulary_note(big_vocab, GPT(big_vocab).num_params())
    assert note is not None and "15,485-token vocabulary holds 9" in note  # 90-odd %
    lecture = preset_config("lecture").model_config(65)
    assert vocabulary_note(lecture, GPT(lecture).num_params()) is None


def test_every_setting_is_a_flag_with_help_in_a_panel():
    # The flags derive from TrainConfig: a new field gets its flag, help and panel there.
    from dataclasses import fields

    import typer

    from mlx_gpt.cli import app
    from mlx_gpt.config import TrainConfig

    params = {p.name: p for p in typer.main.get_command(app).commands["train"].params}
    for f in fields(TrainConfig):
        assert f.name in params, f"no flag for TrainConfig.{f.name}"
        assert params[f.name].help == f.metadata["help"] and params[f.name].default is None
        assert params[f.name].rich_help_panel == f.metadata["panel"]
    assert params["decay_matrices_only"].opts == ["--decay-matrices-only"]
    assert params["decay_matrices_only"].secondary_opts == ["--decay-all"]
    assert {"resume", "config", "threads"} <= set(params)


def test_help_opens_with_what_a_person_decides_first(train_help):
    result = train_help
    panels = [line for line in result.stdout.splitlines() if line.startswith("╭─")]
    first_panel_end = result.stdout.index(panels[1])
    for name in ("--preset", "--data", "--out-dir", "--resume", "--init-from", "--show-config"):
        assert result.stdout.index(f"│ {name} ") < first_panel_end, name
    assert result.stdout.index("│ --block-size ") > first_panel_end


def test_show_config_prints_the_resolved_settings_and_writes_nothing(cli, tmp_path, tiny_run):
    out = tmp_path / "run"
    args = ["--preset", "small", "--n-layer", "3", "--out-dir", str(out), "--show-config"]
    result = cli(TRAIN, *args)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["preset"] == "small" and settings["n_layer"] == 3
    assert settings["n_embd"] == 128 and settings["out_dir"] == str(out)  # from the preset
    assert not out.exists()
    # The output is a --config file that resolves to the same settings.
    saved = tmp_path / "small.json"
    saved.write_text(result.stdout)
    again = cli(TRAIN, "--config", str(saved), "--show-config")
    assert again.returncode == 0 and json.loads(again.stdout) == settings
    # A resume shows the run's own settings, with what the flags change.
    run, _ = tiny_run
    before = (run / "metrics.jsonl").read_bytes()
    resumed = cli(TRAIN, "--out-dir", str(run), "--resume", "--max-iters", "300", "--show-config")
    assert resumed.returncode == 0, resumed.stderr
    settings = json.loads(resumed.stdout)
    assert settings["preset"] == "tiny" and settings["max_iters"] == 300
    assert (run / "metrics.jsonl").read_bytes() == before


def test_config_file_and_flags(cli, tmp_path):
    cfg = tmp_path / "my.json"
    cfg.write_text(json.dumps({"preset": "tiny", "max_iters": 10, "n_embd": 48}))
    out = tmp_path / "run"
    flags = ["--max-iters", "5", "--decay-all", "--learning-rate", "0.002", "--data", TEXT]
    result = cli(TRAIN, "--config", str(cfg), *flags, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    saved = json.loads((out / "config.json").read_text())["train"]
    assert saved["learning_rate"] == 0.002 and saved["decay_matrices_only"] is False
    assert saved["data"] == TEXT
    assert saved["n_embd"] == 48  # from the file
    assert saved["max_iters"] == 5  # the flag wins
    assert saved["n_layer"] == 2  # from the file's preset


def _digest(folder):
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def text_file(tmp_path):
    def make(content: bytes):
        p = tmp_path / "text.txt"
        p.write_bytes(content)
        return str(p)

    return make


BAD = [
    (["--data", "/nonexistent/file.txt"], "does not exist"),
    (["--data", b""], "empty"),
    (["--data", b"\xff\xfe\x00bad"], "not UTF-8"),
    (["--data", b"short text " * 4], "too few"),
    (["--n-embd", "30", "--n-head", "4"], "divisible"),
    (["--n-layer", "0"], "--n-layer must be a positive"),
    (["--batch-size", "-3"], "--batch-size must be a positive"),
    (["--dropout", "1.0"], "--dropout"),
    (["--dropout", "-0.1"], "--dropout"),
    (["--preset", "huge"], "unknown preset"),
    (["--config", "/nonexistent.json"], "does not exist"),
    (["--schedule", "wsd", "--cooldown-frac", "1.5"], "--cooldown-frac must be between 0 and 1"),
    (["--optimizer", "lion"], "--optimizer must be one of adamw, muon"),
    (["--architecture", "modern", "--n-embd", "36", "--n-head", "4"], "must be even"),
    (["--norm-gains"], "add --architecture modern"),
    (["--optimizer", "muon", "--matrix-lr", "0"], "--matrix-lr must be positive"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_exit_2(cli_in_process, tmp_path, text_file, args, message):
    args = [text_file(a) if isinstance(a, bytes) else a for a in args]
    out = tmp_path / "out"
    result = cli_in_process(TRAIN, "--preset", "tiny", "--out-dir", str(out), *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()  # nothing written


def test_resume_errors_leave_the_run_untouched(cli_in_process, tiny_run, tmp_path):
    out, _ = tiny_run
    before = _digest(out)
    cases = [
        (["--resume", "--out-dir", str(tmp_path / "none")], "no run to resume"),
        (["--resume", "--out-dir", str(out), "--n-layer", "3"], "--n-layer 3 differs"),
        (["--out-dir", str(out), "--preset", "tiny"], "--resume"),  # would overwrite
        (["--resume", "--out-dir", str(out), "--max-iters", "50"], "already at step 100"),
        (["--resume", "--out-dir", str(out), "--optimizer", "muon"], "--optimizer muon differs"),
        (["--resume", "--out-dir", str(out), "--architecture", "modern"], "differs"),
    ]
    for args, message in cases:
        result = cli_in_process(TRAIN, *args)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert _digest(out) == before


def test_damaged_checkpoint_is_a_clear_error(cli_in_process, tiny_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_run[0], out)
    config = json.loads((out / "config.json").read_text())
    config["train"]["n_embd"] = 64  # weights no longer match the recorded model
    (out / "config.json").write_text(json.dumps(config))
    result = cli_in_process(TRAIN, "--resume", "--out-dir", str(out), "--n-embd", "64")
    assert result.returncode == 2
    assert "does not match" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS loader is Linux-only")
def test_info_reports_the_optimized_blas(cli):
    result = cli("-m", "mlx_gpt", "info")
    assert result.returncode == 0, result.stderr
    assert "BLAS: OpenBLAS" in result.stdout and " kernels, " in result.stdout
    assert "cblas_sgemm from:" in result.stdout and "blas_forward-" in result.stdout
    assert "GFLOP/s" in result.stdout and "warning" not in result.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the BLAS loader is Linux-only")
def test_importing_mlx_core_first_is_reported_not_hidden(cli):
    code = (
        "import mlx.core; import mlx_gpt.machine.linux_blas as b; print(b.describe(), b.warning())"
    )
    result = cli("-c", code)
    assert result.returncode == 0, result.stderr
    assert "reference BLAS" in result.stdout and "imported before mlx_gpt" in result.stdout
    assert "import mlx_gpt before mlx.core" in result.stderr  # the warning
