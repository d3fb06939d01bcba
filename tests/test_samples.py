"""Samples at evaluations: one per evaluation in samples.jsonl (or every N-th, or within
5% of the run's time), the same for the same model, leaving training's random
draws alone, and truncated on resume."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_faults import one_line_error

from mlx_gpt.metrics import read_metrics
from mlx_gpt.settings import resolve
from mlx_gpt.training import Loop, prepare
from mlx_gpt.training.samples import read_samples

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "train.py")


def run(tmp_path, name, resume=False, **overrides):
    # A sample at every evaluation unless told otherwise: auto's choice depends on time.
    settings = {"out_dir": str(tmp_path / name), "max_iters": 20, "eval_interval": 10,
                "eval_iters": 2, "log_interval": 5, "sample_every": "1", **overrides}  # fmt: skip
    cfg = resolve("tiny", None, settings, resume=resume)
    Loop(prepare(cfg, resume=resume)).run()
    return cfg.run_dir


def evaluations(folder: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["val_loss"])
        for r in read_metrics(folder / "metrics.jsonl")
        if "val_loss" in r
    ]


def test_each_evaluation_appends_a_sample_of_the_model_as_it_is(tmp_path):
    folder = run(tmp_path, "a", sample_tokens=50)
    samples = read_samples(folder)
    assert [(s["step"], s["val_loss"]) for s in samples] == evaluations(folder)
    assert all(len(s["text"]) == 50 and s["prompt"] == "\n" for s in samples)
    assert len({s["text"] for s in samples}) == len(samples)  # the model changed between them
    again = read_samples(run(tmp_path, "b", sample_tokens=50))
    # a fixed seed: the samples differ by the model alone (their seconds by the machine)
    assert [s["text"] for s in again] == [s["text"] for s in samples]


def test_samples_leave_the_training_draws_alone(tmp_path):
    with_samples = run(tmp_path, "on", sample_tokens=40)
    without = run(tmp_path, "off", sample_tokens=0)
    assert not read_samples(without)
    keep = ("step", "train_loss", "val_loss")
    records = [
        [{k: r.get(k) for k in keep} for r in read_metrics(f / "metrics.jsonl")]
        for f in (with_samples, without)
    ]
    assert records[0] == records[1]


def test_sample_every_n_samples_every_nth_evaluation(tmp_path):
    folder = run(tmp_path, "n", sample_tokens=10, max_iters=40, sample_every="2")
    assert [s["step"] for s in read_samples(folder)] == [0, 20, 40]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("sample_s, sampled", [
    # 1 s a sample, 2 s of run between evaluations: a sample once the run is 20x its samples
    (1.0, [1, 20, 29, 39, 48, 58]),
    (0.05, list(range(1, 61))),  # cheap: at every one
])  # fmt: skip
def test_auto_keeps_the_samples_within_5_percent_of_the_runs_time(
    monkeypatch, tmp_path, sample_s, sampled
):
    from mlx_gpt.training import samples as module

    clock = Clock()

    def generate(*args):  # a sample that takes sample_s seconds
        clock.now += sample_s
        return SimpleNamespace(text="x")

    monkeypatch.setattr(module.time, "perf_counter", clock)
    monkeypatch.setattr(module, "generate", generate)
    cfg = resolve("tiny", None, {"out_dir": str(tmp_path), "max_iters": 610})
    start = prepare(cfg)
    samples = module.Samples(tmp_path, cfg, start.tokenizer, start.model)
    taken = []
    for n in range(1, 61):
        clock.now += 2.0  # the steps and the evaluation before the n-th evaluation's sample
        if samples.due(n * 10):
            samples.take(n * 10, 1.0)
            taken.append(n)
        # the first sample aside, the samples stay within 5% of the run's time
        assert samples.samples_s - sample_s <= 0.05 * (clock.now - sample_s) + 1e-9
    assert taken == sampled
    assert [s["seconds"] for s in read_samples(tmp_path)] == [sample_s] * len(sampled)


def test_a_resumed_run_drops_the_samples_past_its_checkpoint(tmp_path):
    folder = run(tmp_path, "r", sample_tokens=20)
    with open(folder / "samples.jsonl", "a") as f:  # as if a run had gone past step 20
        f.write(json.dumps({"step": 25, "val_loss": 1.0, "prompt": "\n", "text": "lost"}) + "\n")
    run(tmp_path, "r", resume=True, max_iters=30, sample_tokens=20)
    assert [s["step"] for s in read_samples(folder)] == [0, 10, 20, 30]


def test_the_samples_command_prints_the_timeline(cli, tmp_path):
    folder = run(tmp_path, "t", sample_tokens=30)
    result = cli("-m", "mlx_gpt", "samples", str(folder))
    assert result.returncode == 0, result.stderr
    for sample in read_samples(folder):
        assert (
            f"--- step {sample['step']:,} | val loss {sample['val_loss']:.4f} ---" in result.stdout
        )
        assert sample["text"] in result.stdout
    empty = run(tmp_path, "none", sample_tokens=0)
    result = cli("-m", "mlx_gpt", "samples", str(empty))
    assert result.returncode == 2 and "no samples.jsonl" in one_line_error(result)


def test_a_prompt_the_vocabulary_lacks_is_one_line_before_anything_is_written(cli, tmp_path):
    out = tmp_path / "run"
    result = cli(TRAIN, "--preset", "tiny", "--sample-prompt", "ü€", "--out-dir", str(out))
    assert result.returncode == 2, result.stderr
    assert "not in the vocabulary" in one_line_error(result)
    assert not out.exists()


def test_the_quick_starts_samples_show_it_learning(cli, tmp_path):
    # small as README's quick start runs it, shortened: a sample of more than step 0,
    # whatever the machine's speed, and the last one after the model has learned
    out = tmp_path / "small"
    result = cli(TRAIN, "--preset", "small", "--max-iters", "150", "--lr-decay-iters", "150",
                 "--eval-interval", "50", "--out-dir", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"python -m mlx_gpt samples {out}" in result.stdout
    shown = cli("-m", "mlx_gpt", "samples", str(out))
    assert shown.returncode == 0, shown.stderr
    steps = [s["step"] for s in read_samples(out)]
    assert steps[0] == 0 and steps[-1] == 150
    for step in steps:
        assert f"--- step {step:,} |" in shown.stdout
