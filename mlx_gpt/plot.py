"""The overfitting plot: train and val loss against step, the best step, the gap.

`metric="bpc"` draws bits per character instead of loss per token: the scale on which a
char run and a BPE run compare. `x="time"` puts minutes of training on the x axis, for
runs compared at equal wall time.

Drawn with matplotlib's object API on the Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mlx_gpt.errors import UserError
from mlx_gpt.metrics import read_metrics


@dataclass
class Curves:
    """The evaluations of one run, in step order."""

    name: str
    steps: list[int]
    train: list[float]  # eval-mode loss (or bpc) on the train split (same batches every time)
    val: list[float]
    tokens_per_step: int | None
    minutes: list[float]  # training time at each evaluation

    @property
    def best(self) -> int:
        """Index of the lowest val loss (the first, on ties)."""
        return min(range(len(self.val)), key=self.val.__getitem__)

    @property
    def gaps(self) -> list[float]:
        return [v - t for v, t in zip(self.val, self.train, strict=True)]


METRICS = {"loss": ("eval_train_loss", "val_loss"), "bpc": ("eval_train_bpc", "val_bpc")}
HELLASWAG = ("hellaswag_acc", "hellaswag_acc_norm")  # --metric hellaswag
XS = ("step", "time")


def load_curves(run: str | Path, metric: str = "loss") -> Curves:
    if metric == "hellaswag":
        return _hellaswag_curves(run)
    if metric not in METRICS:
        names = ", ".join([*METRICS, "hellaswag"])
        raise UserError(f"--metric must be one of {names}, not {metric!r}")
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.jsonl; is it a run folder?")
    train_key, val_key = METRICS[metric]
    scale = 1.0
    if metric == "bpc" and not _has_bpc(path):
        if _tokenizer(run) != "char":
            raise UserError(f"{path} has no bits-per-character records; plot --metric loss")
        train_key, val_key, scale = "eval_train_loss", "val_loss", 1 / math.log(2)
    evals = {}
    per_step = None
    for r in read_metrics(path):
        if "val_loss" in r and "eval_train_loss" in r:
            evals[r["step"]] = r  # a resumed run may repeat a step, and the later record wins
        if r.get("step") and r.get("tokens"):
            per_step = r["tokens"] // r["step"]
    if not evals:
        raise UserError(f"{path} has no evaluations yet; plot again after the first one")
    return _curves(run, evals, train_key, val_key, scale, per_step)


def _curves(run, evals: dict, train_key: str, val_key: str, scale=1.0, per_step=None) -> Curves:
    """Curves of the records `evals` (step -> record), in step order."""
    steps = sorted(evals)
    return Curves(
        name=Path(run).resolve().name,
        steps=steps,
        train=[evals[s][train_key] * scale for s in steps],
        val=[evals[s][val_key] * scale for s in steps],
        tokens_per_step=per_step,
        minutes=[evals[s].get("elapsed_s", 0.0) / 60 for s in steps],
    )


def _hellaswag_curves(run: str | Path) -> Curves:
    """HellaSwag's acc (as `train`) and acc_norm (as `val`) at each evaluation scored."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.jsonl; is it a run folder?")
    scored = {r["step"]: r for r in read_metrics(path) if HELLASWAG[1] in r}
    if not scored:
        raise UserError(f"{path} has no HellaSwag records; train with --hellaswag FILE")
    return _curves(run, scored, *HELLASWAG)


def draw_hellaswag(curves: list[Curves], x: str = "step") -> Figure:
    """HellaSwag accuracy as the runs learn, beside GPT-2 124M's (build-nanogpt's figure)."""
    fig = Figure(figsize=(10, 6), layout="constrained")
    ax = fig.subplots()
    for i, c in enumerate(curves):
        xs = c.steps if x == "step" else c.minutes
        ax.plot(xs, c.val, "-o", color=f"C{i}", label=f"{c.name}: acc_norm")
        ax.plot(xs, c.train, "--", color=f"C{i}", alpha=0.7, label=f"{c.name}: acc")
    ax.axhline(0.25, color="gray", lw=0.8, ls=":", label="chance (0.25)")
    ax.axhline(0.2955, color="black", lw=0.8, ls="--", label="GPT-2 124M acc_norm (0.2955)")
    ax.set_ylabel("HellaSwag accuracy (acc_norm: per-token mean loss, build-nanogpt's)")
    ax.set_xlabel("step" if x == "step" else "minutes of training")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def _has_bpc(path: Path) -> bool:
    return any("val_bpc" in r for r in read_metrics(path))


def _tokenizer(run: str | Path) -> str:
    """The run's tokenizer kind; runs from before tokenizers existed are char runs."""
    try:
        return json.loads(Path(run, "config.json").read_text())["train"].get("tokenizer", "char")
    except (OSError, ValueError, KeyError):
        return "char"


def draw(curves: list[Curves], metric: str = "loss", x: str = "step") -> Figure:
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax, gap_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    single = len(curves) == 1
    for i, c in enumerate(curves):
        color = f"C{i}"
        label = "" if single else f"{c.name}: "
        xs = c.steps if x == "step" else c.minutes
        ax.plot(xs, c.train, "--", color=color, alpha=0.8, label=f"{label}train")
        ax.plot(xs, c.val, "-", color=color, lw=2, label=f"{label}val")
        b = c.best
        ax.plot(xs[b], c.val[b], "o", color=color, ms=8, zorder=5)
        where = f"step {c.steps[b]:,}" if x == "step" else f"{c.minutes[b]:.1f} min"
        ax.annotate(
            f"best val {c.val[b]:.4f}\nat {where}",
            (xs[b], c.val[b]),
            xytext=(0, 40),
            textcoords="offset points",
            ha="center",
            color=color,
            arrowprops={"arrowstyle": "->", "color": color},
        )
        if c.steps[b] < c.steps[-1]:
            ax.axvspan(
                xs[b],
                xs[-1],
                color=color,
                alpha=0.08,
                label=f"{label}overfitting (after best val)",
            )
        last = len(c.steps) - 1
        ax.annotate(
            "",
            (xs[last], c.train[last]),
            xytext=(xs[last], c.val[last]),
            arrowprops={"arrowstyle": "<->", "color": color},
        )
        ax.annotate(
            f"gap {c.gaps[last]:+.3f}",
            (xs[last], (c.train[last] + c.val[last]) / 2),
            xytext=(6, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            color=color,
        )
        gap_ax.plot(xs, c.gaps, color=color, label=c.name)
    what = "loss" if metric == "loss" else "bits per character"
    ax.set_ylabel("loss (mean cross-entropy per token)" if metric == "loss" else what)
    ax.set_title(f"train vs val {what}" if not single else f"{curves[0].name}: train vs val {what}")
    ax.grid(alpha=0.3)
    ax.margins(x=0.12)  # room for the gap label right of the last point
    ax.legend(loc="upper right")
    if not single:
        gap_ax.legend(loc="upper left", fontsize="small")
    gap_ax.axhline(0, color="gray", lw=0.8)
    gap_ax.set_ylabel("val − train")
    gap_ax.set_xlabel("step" if x == "step" else "minutes of training")
    gap_ax.grid(alpha=0.3)
    per_step = {c.tokens_per_step for c in curves}
    if x == "step" and len(per_step) == 1 and None not in per_step:
        n = per_step.pop()
        top = ax.secondary_xaxis("top", functions=(lambda s: s * n, lambda t: t / n))
        top.set_xlabel("tokens seen")
    return fig


def plot_runs(
    runs: list[str | Path],
    output: str | Path | None = None,
    svg: bool = False,
    metric: str = "loss",
    x: str = "step",
):
    """Draw the runs in one figure; save it as PNG (and SVG). Returns the paths written.

    One run goes to RUN/loss.png unless `output` says otherwise; several need `output`.
    """
    if not runs:
        raise UserError("name at least one run folder")
    if x not in XS:
        raise UserError(f"--x must be one of {', '.join(XS)}, not {x!r}")
    if output is None:
        if len(runs) > 1:
            raise UserError("several runs go in one figure: say where with --output FILE.png")
        output = Path(runs[0]) / "loss.png"
    curves = [load_curves(r, metric) for r in runs]
    fig = draw_hellaswag(curves, x) if metric == "hellaswag" else draw(curves, metric, x)
    FigureCanvasAgg(fig)
    output = Path(output)
    written = [output]
    fig.savefig(output, dpi=110)
    if svg:
        written.append(output.with_suffix(".svg"))
        fig.savefig(written[-1])
    return written
