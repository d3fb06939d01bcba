"""The overfitting plot: train and val loss against step, the best step, the gap.

Drawn with matplotlib's object API on the Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

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
    train: list[float]  # eval-mode loss on the train split (same batches every time)
    val: list[float]
    tokens_per_step: int | None

    @property
    def best(self) -> int:
        """Index of the lowest val loss (the first, on ties)."""
        return min(range(len(self.val)), key=self.val.__getitem__)

    @property
    def gaps(self) -> list[float]:
        return [v - t for v, t in zip(self.val, self.train, strict=True)]


def load_curves(run: str | Path) -> Curves:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run} has no metrics.jsonl; is it a run folder?")
    evals = {}
    per_step = None
    for r in read_metrics(path):
        if "val_loss" in r and "eval_train_loss" in r:
            evals[r["step"]] = r  # a resumed run may repeat a step: the later record wins
        if r.get("step") and r.get("tokens"):
            per_step = r["tokens"] // r["step"]
    if not evals:
        raise UserError(f"{path} has no evaluations yet; plot again after the first one")
    steps = sorted(evals)
    return Curves(
        name=Path(run).resolve().name,
        steps=steps,
        train=[evals[s]["eval_train_loss"] for s in steps],
        val=[evals[s]["val_loss"] for s in steps],
        tokens_per_step=per_step,
    )


def draw(curves: list[Curves]) -> Figure:
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax, gap_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    single = len(curves) == 1
    for i, c in enumerate(curves):
        color = f"C{i}"
        label = "" if single else f"{c.name}: "
        ax.plot(c.steps, c.train, "--", color=color, alpha=0.8, label=f"{label}train")
        ax.plot(c.steps, c.val, "-", color=color, lw=2, label=f"{label}val")
        b = c.best
        ax.plot(c.steps[b], c.val[b], "o", color=color, ms=8, zorder=5)
        ax.annotate(
            f"best val {c.val[b]:.4f}\nat step {c.steps[b]:,}",
            (c.steps[b], c.val[b]),
            xytext=(0, 40),
            textcoords="offset points",
            ha="center",
            color=color,
            arrowprops={"arrowstyle": "->", "color": color},
        )
        if c.steps[b] < c.steps[-1]:
            ax.axvspan(
                c.steps[b],
                c.steps[-1],
                color=color,
                alpha=0.08,
                label=f"{label}overfitting (after best val)",
            )
        last = len(c.steps) - 1
        ax.annotate(
            "",
            (c.steps[last], c.train[last]),
            xytext=(c.steps[last], c.val[last]),
            arrowprops={"arrowstyle": "<->", "color": color},
        )
        ax.annotate(
            f"gap {c.gaps[last]:+.3f}",
            (c.steps[last], (c.train[last] + c.val[last]) / 2),
            xytext=(6, 0),
            textcoords="offset points",
            ha="left",
            va="center",
            color=color,
        )
        gap_ax.plot(c.steps, c.gaps, color=color, label=c.name)
    ax.set_ylabel("loss (mean cross-entropy)")
    ax.set_title("train vs val loss" if not single else f"{curves[0].name}: train vs val loss")
    ax.grid(alpha=0.3)
    ax.margins(x=0.12)  # room for the gap label right of the last point
    ax.legend(loc="upper right")
    if not single:
        gap_ax.legend(loc="upper left", fontsize="small")
    gap_ax.axhline(0, color="gray", lw=0.8)
    gap_ax.set_ylabel("val − train")
    gap_ax.set_xlabel("step")
    gap_ax.grid(alpha=0.3)
    per_step = {c.tokens_per_step for c in curves}
    if len(per_step) == 1 and None not in per_step:
        n = per_step.pop()
        top = ax.secondary_xaxis("top", functions=(lambda s: s * n, lambda t: t / n))
        top.set_xlabel("tokens seen")
    return fig


def plot_runs(runs: list[str | Path], output: str | Path | None = None, svg: bool = False):
    """Draw the runs in one figure; save it as PNG (and SVG). Returns the paths written.

    One run goes to RUN/loss.png unless `output` says otherwise; several need `output`.
    """
    if not runs:
        raise UserError("name at least one run folder")
    if output is None:
        if len(runs) > 1:
            raise UserError("several runs go in one figure: say where with --output FILE.png")
        output = Path(runs[0]) / "loss.png"
    fig = draw([load_curves(r) for r in runs])
    FigureCanvasAgg(fig)
    output = Path(output)
    written = [output]
    fig.savefig(output, dpi=110)
    if svg:
        written.append(output.with_suffix(".svg"))
        fig.savefig(written[-1])
    return written
