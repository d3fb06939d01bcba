import json
import math
import re
from pathlib import Path

import pytest

from mlx_gpt.metrics import read_metrics
from mlx_gpt.plot import draw, load_curves, plot_runs
from mlx_gpt.presets import preset_config
from mlx_gpt.training import Loop, prepare
from mlx_gpt.training import loop as loop_module


def write_metrics(folder: Path, vals, trains, every=100, extra_lines=()):
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (v, t) in enumerate(zip(vals, trains, strict=True)):
        step = i * every
        lines.append(
            json.dumps(
                {
                    "step": step,
                    "tokens": step * 64,
                    "train_loss": t,
                    "val_loss": v,
                    "eval_train_loss": t,
                }
            )
        )
    lines.extend(extra_lines)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


# val falls, bottoms out at index 6 (step 600), then rises while train keeps falling
VALS = [4.2, 3.0, 2.4, 2.0, 1.8, 1.7, 1.65, 1.68, 1.72, 1.8]
TRAINS = [4.2, 2.9, 2.3, 1.9, 1.6, 1.45, 1.3, 1.2, 1.1, 1.0]


def test_plot_of_synthetic_metrics_is_a_real_png(tmp_path):
    run = write_metrics(tmp_path / "run", VALS, TRAINS)
    written = plot_runs([run], svg=True)
    png = run / "loss.png"
    assert written == [png, run / "loss.svg"]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(png).shape
    assert width > 800 and height > 600
    assert (run / "loss.svg").read_text().lstrip().startswith("<?xml")


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_the_annotated_best_step_is_the_argmin_of_val(tmp_path):
    curves = load_curves(write_metrics(tmp_path / "run", VALS, TRAINS))
    fig = draw([curves])
    best = [t for t in _texts(fig) if t.startswith("best val")]
    assert len(best) == 1
    step = int(re.search(r"at step ([\d,]+)", best[0]).group(1).replace(",", ""))
    assert step == 100 * VALS.index(min(VALS)) == 600
    assert "1.6500" in best[0]
    gap = [t for t in _texts(fig) if t.startswith("gap")]
    assert gap == [f"gap {VALS[-1] - TRAINS[-1]:+.3f}"]
    # the overfitting region starts at the best step and runs to the end
    spans = [p for p in fig.axes[0].patches if "overfitting" in p.get_label()]
    assert len(spans) == 1
    start, width = spans[0].get_x(), spans[0].get_width()
    assert (start, start + width) == (600, 900)


def test_two_runs_overlay_in_one_figure(tmp_path):
    a = write_metrics(tmp_path / "a", VALS, TRAINS)
    b = write_metrics(tmp_path / "b", [v + 0.1 for v in VALS[:5]], TRAINS[:5])
    out = tmp_path / "both.png"
    assert plot_runs([a, b], output=out) == [out] and out.stat().st_size > 10_000
    fig = draw([load_curves(a), load_curves(b)])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert {"a: val", "a: train", "b: val", "b: train"} <= set(labels)
    assert len([t for t in _texts(fig) if t.startswith("best val")]) == 2
    with pytest.raises(Exception, match="--output"):
        plot_runs([a, b])


def test_a_damaged_metrics_line_is_skipped_with_a_warning(tmp_path, cli):
    run = write_metrics(tmp_path / "run", VALS, TRAINS, extra_lines=['{"step": 1000, "val_lo'])
    with pytest.warns(UserWarning, match="damaged"):
        curves = load_curves(run)
    assert curves.steps[-1] == 900 and len(curves.steps) == len(VALS)
    result = cli("-m", "mlx_gpt", "plot", str(run))
    assert result.returncode == 0, result.stderr
    assert "warning:" in result.stderr and "Traceback" not in result.stderr
    assert (run / "loss.png").is_file()


def test_plot_errors_are_one_line(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    write_metrics(tmp_path / "noeval", [], [])
    for run, message in (
        (tmp_path / "empty", "no metrics.jsonl"),
        (tmp_path / "noeval", "no eval"),
    ):
        result = cli("-m", "mlx_gpt", "plot", str(run))
        assert result.returncode == 2 and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_training_writes_the_plot(tiny_run):
    out, result = tiny_run
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "loss curves:" in result.stdout


def test_early_stop_stops_at_the_right_evaluation(tmp_path, monkeypatch):
    scripted = iter([4.0, 3.0, 2.5, 2.6, 2.7, 2.4, 2.3])  # best at the 3rd evaluation

    def fake_estimate(model, splits, cfg, ranks=None, **progress_and_stop):
        val = next(scripted)
        return {"train": val - 0.1, "val": val}

    monkeypatch.setattr(loop_module, "estimate_loss", fake_estimate)
    cfg = preset_config("tiny")
    cfg.out_dir, cfg.eval_interval, cfg.early_stop = str(tmp_path / "run"), 5, 2
    result = Loop(prepare(cfg)).run()
    # evaluations at steps 0, 5, 10 (best), 15, 20: two without a new best -> stop at 20
    assert result.stopped == "early_stop" and result.step == 20
    assert result.best_step == 10 and result.best_val_loss == 2.5
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    event = records[-1]
    assert event["event"] == "early_stop" and event["step"] == 20 and "step 10" in event["reason"]
    best = json.loads((tmp_path / "run" / "best" / "state.json").read_text())
    assert best["step"] == 10 and math.isclose(best["best_val_loss"], 2.5)


def test_early_stop_off_runs_to_the_end(tmp_path, monkeypatch):
    flat = {"train": 5.0, "val": 5.0}
    monkeypatch.setattr(loop_module, "estimate_loss", lambda *args, **kwargs: flat)
    cfg = preset_config("tiny")
    cfg.out_dir, cfg.eval_interval, cfg.max_iters = str(tmp_path / "run"), 5, 30
    assert Loop(prepare(cfg)).run().stopped == "finished"
