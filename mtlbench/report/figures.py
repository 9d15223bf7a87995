"""The report's figures (seaborn / matplotlib), one colour per method across all of them.

Colours come from seaborn's colour-blind-safe palette in the protocol's method order, so a
method keeps its colour in every figure of a report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mtlbench.report.leaderboard import Leaderboard, reference_label  # noqa: E402
from mtlbench.report.per_run import peak_memory  # noqa: E402
from mtlbench.report.load import Protocol  # noqa: E402
from mtlbench.report.weighted_metrics import reliability_curve  # noqa: E402
from mtlbench.tasks import TASK_NAMES  # noqa: E402

FIGURES: dict[str, str] = {
    "auroc_heatmap": "Test AUROC per task (rows: methods; mean over seeds).",
    "auroc_vs_cost": "Mean test AUROC against cost (time per epoch, without runs timed on a loaded machine; peak "
    "memory); the line is the Pareto front.",
    "weights": "Task weights per epoch (epoch means), one panel per method, one line per task.",
    "loss_curves": "Training and validation loss (mean over tasks) per epoch; mean over seeds.",
    "loss_change": "Per-task change in test loss against {ref}, % (negative = lower loss than {ref}).",
    "auroc_bars": "Per-task test AUROC; bars are means over seeds, error bars one sd over seeds.",
    "reliability": "Reliability diagram: observed frequency of the finding against the predicted probability "
    "(10 equal-width bins), pooled over the tasks every mean covers, the test images and the seeds; "
    "the diagonal is perfect calibration.",
}


def palette(variants: list[str]) -> dict[str, tuple]:
    """One colour-blind-safe colour per method, stable within a report.

    seaborn's colour-blind palette has 10 colours; methods beyond that get a darkened colour of
    it (lightness, which colour-blind readers see, tells them apart).
    """
    base = sns.color_palette("colorblind", 10)
    colours = {}
    for i, v in enumerate(variants):
        colour = base[i % 10] if i < 10 else base[(3 * (i - 10) + 1) % 10]
        colours[v] = colour if i < 10 else sns.set_hls_values(colour, l=0.25)
    return colours


def caption(name: str, reference: str) -> str:
    """The caption of figure `name` in a report against `reference`."""
    return FIGURES[name].format(ref=reference_label(reference))


def render_all(
    protocol: Protocol, board: Leaderboard, folder: Path, advance: Callable[[int], None] = lambda n=1: None
) -> dict[str, list[Path]]:
    """Draw every figure into `folder` as PNG and SVG; returns {name: [files]}."""
    folder.mkdir(parents=True, exist_ok=True)
    colours = palette(protocol.variants())
    task_table = _per_task(protocol)
    drawers = {
        "auroc_heatmap": lambda ax: _heatmap(ax, task_table, _order(task_table, protocol)),
        "auroc_vs_cost": lambda ax: _cost(ax, board, colours),
        "weights": None,
        "loss_curves": lambda ax: _curves(ax, protocol, colours),
        "loss_change": lambda ax: _loss_change(ax, task_table, _order(task_table, protocol), board.reference),
        "auroc_bars": lambda ax: _bars(ax, protocol, colours),
        "reliability": lambda ax: _reliability(ax, protocol, board, colours),
    }
    written = {}
    sns.set_theme(style="whitegrid", context="paper")
    for name, draw in drawers.items():
        fig = _weights(protocol) if name == "weights" else _single(name, draw, len(protocol.variants()))
        written[name] = _save(fig, folder / name, layout=name != "weights")
        advance(1)
    return written


def _single(name: str, draw: Callable, n_variants: int) -> plt.Figure:
    if name == "auroc_vs_cost":
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        draw(axes)
        return fig
    size = {
        "auroc_heatmap": (12, 0.45 * n_variants + 2.5),
        "loss_change": (12, 0.45 * n_variants + 2.5),
        "auroc_bars": (13, 4.8),
        "loss_curves": (11, 4.2),
        "reliability": (5.5, 5.0),
    }[name]
    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    return fig


def _save(fig: plt.Figure, stem: Path, layout: bool = True) -> list[Path]:
    if layout:
        fig.tight_layout()
    files = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(files[0], dpi=130)
    fig.savefig(files[1])
    plt.close(fig)
    return files


def _reliability(ax: plt.Axes, protocol: Protocol, board: Leaderboard, colours: dict) -> None:
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
    runs = protocol.complete()
    for variant in protocol.variants():
        pooled = [protocol.predictions.get((int(r), "test")) for r in runs.loc[runs["variant"] == variant, "run_id"]]
        pooled = [p for p in pooled if p is not None and p[1].shape[1] == len(board.eligible)]
        if not pooled or not board.eligible.any():
            continue
        labels = np.concatenate([p[1][:, board.eligible].ravel() for p in pooled])
        probs = np.concatenate([p[2][:, board.eligible].ravel() for p in pooled])
        labelled = ~np.isnan(labels.astype(np.float64))  # a missing label is no observation
        mean_p, freq, count = reliability_curve(labels[labelled], probs[labelled])
        shown = count > 0
        ax.plot(mean_p[shown], freq[shown], marker="o", markersize=3, color=colours[variant], label=variant)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted probability", ylabel="observed frequency")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no task has enough test positives", ha="center", va="center")


def _per_task(protocol: Protocol) -> pd.DataFrame:
    """Test metrics per (variant, task), mean over complete runs."""
    runs = protocol.complete()[["run_id", "variant"]]
    test = protocol.test.merge(runs, on="run_id")
    return test.groupby(["variant", "task"])[["auroc", "loss"]].mean().reset_index()


def _order(table: pd.DataFrame, protocol: Protocol) -> list[str]:
    return [v for v in protocol.variants() if v in set(table["variant"])]


def _heatmap(ax: plt.Axes, table: pd.DataFrame, order: list[str]) -> None:
    grid = table.pivot(index="variant", columns="task", values="auroc")
    grid = grid.reindex(index=order, columns=[t for t in TASK_NAMES if t in grid.columns])
    low = float(np.nanmin(grid.to_numpy())) if np.isfinite(grid.to_numpy()).any() else 0.5
    sns.heatmap(
        grid,
        annot=True,
        fmt=".2f",
        cmap="viridis",
        vmin=min(0.5, low),
        vmax=1.0,
        ax=ax,
        cbar_kws={"label": "test AUROC"},
        annot_kws={"size": 7},
    )
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title("Test AUROC per task")


def _cost(axes, board: Leaderboard, colours: dict) -> None:
    values = board.values()
    done = values[np.isfinite(values["auroc"])]
    # no s/epoch column where every run was timed on a loaded machine (its timings are left out)
    times = done["s_per_epoch"] if "s_per_epoch" in done.columns else pd.Series(np.nan, index=done.index)
    costs = {"s/epoch": times, "memory": {v: peak_memory(values, v)[0] for v in done.index}}
    for ax, column, label in (
        (axes[0], "s/epoch", "training time per epoch (s)"),
        (axes[1], "memory", "peak memory (MiB)"),
    ):
        points = [(costs[column][v], done.loc[v, "auroc"], v) for v in done.index if np.isfinite(costs[column][v])]
        for x, y, v in points:
            ax.scatter(x, y, color=colours[v], s=60, label=v, zorder=3)
            ax.annotate(v, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if not points:
            empty = "no usable timing (runs timed on a loaded\nmachine are left out)" if column == "s/epoch" else "none"
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="0.4")
        front = pareto_front([(x, y) for x, y, _ in points])
        if len(front) > 1:
            ax.plot(*zip(*front), color="0.4", linestyle="--", linewidth=1, zorder=2, label="Pareto front")
        ax.set_xlabel(label)
        ax.set_ylabel("mean test AUROC")
    axes[0].set_title("AUROC against time")
    axes[1].set_title("AUROC against memory")


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by another with lower-or-equal cost and higher-or-equal score, by cost."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def _weights(protocol: Protocol) -> plt.Figure:
    variants = protocol.variants()
    cols = min(4, len(variants))
    rows = -(-len(variants) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False, sharex=True)
    runs = protocol.runs[["run_id", "variant"]]
    weights = protocol.weights.merge(runs, on="run_id") if not protocol.weights.empty else pd.DataFrame()
    task_colours = dict(zip(TASK_NAMES, sns.color_palette("tab20", len(TASK_NAMES))))
    for ax, variant in zip(axes.flat, variants):
        mine = weights[weights["variant"] == variant] if not weights.empty else weights
        if not mine.empty:
            mean = mine.groupby(["task", "epoch"])["weight"].mean().reset_index()
            for task, group in mean.groupby("task"):
                ax.plot(group["epoch"] + 1, group["weight"], color=task_colours.get(task), linewidth=1, marker=".")
        else:
            ax.text(0.5, 0.5, "no task weights logged", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_title(variant, fontsize=9)
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(variants) :]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], color=c, label=t) for t, c in task_colours.items()]
    fig.suptitle("Task weights per epoch")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=7, fontsize=7, frameon=False)
    return fig


def _curves(ax: plt.Axes, protocol: Protocol, colours: dict) -> None:
    runs = protocol.complete()[["run_id", "variant"]]
    curves = protocol.curves.merge(runs, on="run_id")
    if curves.empty:
        return
    mean = curves.groupby(["variant", "split", "epoch"])["loss"].mean().reset_index()
    for variant in protocol.variants():
        for split in ("train", "val"):
            group = mean[(mean["variant"] == variant) & (mean["split"] == split)]
            if len(group):
                ax.plot(
                    group["epoch"] + 1,
                    group["loss"],
                    color=colours[variant],
                    marker="o",
                    markersize=3,
                    linestyle="-" if split == "train" else "--",
                    label=f"{variant} ({split})",
                )
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss, mean over tasks")
    ax.set_title("Training (solid) and validation (dashed) loss")
    ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)


def _loss_change(ax: plt.Axes, table: pd.DataFrame, order: list[str], reference: str) -> None:
    label = reference_label(reference)
    ref = table[table["variant"] == reference].set_index("task")["loss"]
    others = table[table["variant"] != reference].copy()
    if ref.empty or others.empty:
        ax.text(0.5, 0.5, f"needs {label} and another method", ha="center", transform=ax.transAxes)
        return
    others["change"] = 100 * (others["loss"] - others["task"].map(ref)) / others["task"].map(ref)
    grid = others.pivot(index="variant", columns="task", values="change")
    grid = grid.reindex(
        index=[v for v in order if v in grid.index], columns=[t for t in TASK_NAMES if t in grid.columns]
    )
    limit = float(np.nanmax(np.abs(grid.to_numpy()))) if np.isfinite(grid.to_numpy()).any() else 1.0
    sns.heatmap(
        grid,
        annot=True,
        fmt=".0f",
        cmap="vlag",
        center=0,
        vmin=-limit,
        vmax=limit,
        ax=ax,
        cbar_kws={"label": f"test loss change vs {label} (%)"},
        annot_kws={"size": 7},
    )
    ax.set_xlabel("")
    ax.set_ylabel("")
    ax.set_title(f"Per-task test loss against {label}")


def _bars(ax: plt.Axes, protocol: Protocol, colours: dict) -> None:
    runs = protocol.complete()[["run_id", "variant"]]
    test = protocol.test.merge(runs, on="run_id")
    order = [v for v in protocol.variants() if v in set(test["variant"])]
    sns.barplot(
        data=test,
        x="task",
        y="auroc",
        hue="variant",
        hue_order=order,
        order=list(TASK_NAMES),
        palette=colours,
        errorbar="sd",
        ax=ax,
        err_kws={"linewidth": 0.8},
    )
    ax.set_ylim(0.0, 1.0)
    ax.axhline(0.5, color="0.5", linewidth=0.7, linestyle=":")
    ax.tick_params(axis="x", rotation=35, labelsize=7)
    ax.set_xlabel("")
    ax.set_ylabel("test AUROC")
    ax.set_title("Per-task test AUROC (error bars: sd over seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
