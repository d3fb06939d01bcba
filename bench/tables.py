"""The tables and the chart of bench/compare.py, from its result rows.

A row is one worker's JSON answer merged over repeats (see compare.merge_runs): the
figures of its median run, and `*_range` fields hold (min, max) over the runs.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def spread(r: dict, key: str, fmt: str = ",.1f") -> str:
    """min-max over the repeats of a figure, e.g. `54.0-57.3`; empty for a single run."""
    low, high = r.get(f"{key}_range") or (None, None)
    if low is None or len(r.get("runs", [])) < 2:
        return ""
    if high >= 1000:
        fmt = ",.0f"  # keeps the column narrow enough not to be cut
    return f"{low:{fmt}}-{high:{fmt}}"


def status_cell(r: dict) -> str | None:
    """Why a row has no figures, or None when it has them."""
    if "error" in r:
        return f"[red]failed: {r['error']}"
    if "skipped" in r:
        return f"[yellow]skipped: {r['skipped']}"
    if "timeout" in r and "tokens_per_sec" not in r and "wall_s" not in r:
        return f"[red]timeout after {r['timeout']:g} s"
    return None


def training_table(results: list[dict]) -> Table:
    table = Table(title="Training (one optimizer step, fp32 unless the variant says)")
    table.add_column("config")
    table.add_column("framework", no_wrap=True)
    for col in ("ms/step", "range", "tokens/s", "MLX ÷ this", "1st step s", "peak MB", "RSS MB"):
        table.add_column(col, justify="right")
    table.add_column("GFLOP/s", justify="right")
    for config in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == config]
        mlx = next((r for r in rows if r.get("framework") == "mlx"), {})
        for r in rows:
            if status := status_cell(r):
                table.add_row(config, r["label"], status, *[""] * 7)
                continue
            table.add_row(
                config,
                r["label"],
                f"{r['ms_per_step']:,.1f}",
                spread(r, "ms_per_step"),
                f"{r['tokens_per_sec']:,.0f}",
                ratio(mlx.get("tokens_per_sec"), r["tokens_per_sec"]),
                f"{r['compile_s']:.1f}",
                f"{r['peak_memory_mb']:,.0f}",
                f"{r['peak_rss_mb']:,.0f}",
                f"{r['model_flops'] / 1e9:,.1f}",
            )
        table.add_section()
    return table


def generation_table(results: list[dict], tokens: int) -> Table:
    table = Table(title=f"Generation (batch 1, sampling {tokens} characters, fp32)")
    table.add_column("config")
    table.add_column("framework", no_wrap=True)
    for col in ("KV cache tok/s", "range", "crop loop tok/s", "cache ÷ crop"):
        table.add_column(col, justify="right")
    table.add_column("MLX ÷ this (cache)", justify="right")
    table.add_column("MLX ÷ this (crop)", justify="right")
    for config in dict.fromkeys(r["config"] for r in results):
        rows = [r for r in results if r["config"] == config and r.get("gen_tokens")]
        mlx = next((r for r in rows if r["framework"] == "mlx"), {})
        for r in rows:
            if "gen_crop_tokens_per_sec" not in r:
                table.add_row(config, r["label"], status_cell(r) or "[red]timeout", *[""] * 5)
                continue
            cached, crop = r["gen_cached_tokens_per_sec"], r["gen_crop_tokens_per_sec"]
            table.add_row(
                config,
                r["label"],
                f"{cached:,.0f}",
                spread(r, "gen_cached_tokens_per_sec", ",.0f"),
                f"{crop:,.1f}",
                ratio(cached, crop),
                ratio(mlx.get("gen_cached_tokens_per_sec"), cached),
                ratio(mlx.get("gen_crop_tokens_per_sec"), crop),
            )
    return table


def end_to_end_table(rows: list[dict], config: dict) -> Table:
    c = config
    table = Table(
        title=f"End to end: the whole training run as a user runs it, evaluation included "
        f"({c['max_iters']} steps, batch {c['batch_size']}, block {c['block_size']}, "
        f"{c['n_layer']} layers, {c['n_embd']} wide, eval every {c['eval_interval']} "
        f"over {c['eval_iters']} batches; each side: {rows[0].get('includes', '?')})"
    )
    table.add_column("framework", no_wrap=True)
    for col in ("wall s", "range", "wall ÷ PyTorch's", "evaluations", "final val loss"):
        table.add_column(col, justify="right")
    torch_row = next((r for r in rows if r["framework"] == "torch"), {})
    for r in rows:
        if "wall_s" not in r:
            table.add_row(r["label"], status_cell(r) or "[red]failed", *[""] * 4)
            continue
        table.add_row(
            r["label"],
            f"{r['wall_s']:,.1f}",
            spread(r, "wall_s"),
            ratio(r["wall_s"], torch_row.get("wall_s")),
            str(r.get("evaluations", "?")),
            f"{r['val_loss']:.4f}",
        )
    return table


def bar_chart(results: list[dict], path: Path) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ok = [r for r in results if status_cell(r) is None]
    configs = list(dict.fromkeys(r["config"] for r in ok))
    if not configs:
        return False  # nothing measured: no chart
    fig = Figure(figsize=(11, 4 + 1.2 * len(configs)), layout="constrained")
    axes = fig.subplots(len(configs), 2, squeeze=False)
    for (train_ax, gen_ax), config in zip(axes, configs, strict=True):
        rows = [r for r in ok if r["config"] == config]
        colors = ["C0" if r["framework"] == "mlx" else "C1" for r in rows]
        train_ax.barh([r["label"] for r in rows], [r["tokens_per_sec"] for r in rows], color=colors)
        train_ax.set_title(f"{config}: training tokens/s")
        train_ax.invert_yaxis()
        gen = [r for r in rows if "gen_crop_tokens_per_sec" in r]
        labels, values = [], []
        for r in gen:
            labels += [f"{r['label']} KV cache", f"{r['label']} crop loop"]
            values += [r["gen_cached_tokens_per_sec"], r["gen_crop_tokens_per_sec"]]
        gen_ax.barh(labels, values, color=["C0", "C0", "C1", "C1"][: len(values)])
        gen_ax.set_title(f"{config}: generation tokens/s")
        gen_ax.invert_yaxis()
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return True
