"""The leaderboard: one row per method variant of a protocol, with uncertainty and costs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_curve, roc_curve

from mtlbench.report.load import Protocol
from mtlbench.report.stats import Difference, delta_m, paired_bootstrap, paired_t

REFERENCE = "ew"
COLUMNS: dict[str, str] = {
    "runs": "complete runs / runs (failed, diverged or out-of-memory runs are listed by status)",
    "AUROC": "test AUROC, mean over the 14 tasks; mean ± sd over seeds",
    "accuracy@0.5": "test accuracy at p > 0.5, mean over tasks (the DeepChest paper's 'overall accuracy')",
    "macro-F1": "test F1 per task at the threshold that maximizes F1 on validation, mean over tasks",
    "balanced acc.": "test balanced accuracy per task at the threshold that maximizes Youden's J on validation",
    "test loss": "test loss (the training loss function), mean over tasks",
    "Δm% vs EW": "mean relative change vs EW over tasks of AUROC (higher better) and test loss (lower better), %",
    "ΔAUROC vs EW (seeds)": "paired over seeds: mean difference, 95% t-interval, p (paired t-test)",
    "ΔAUROC vs EW (images)": "paired bootstrap over test images ({resamples:,} resamples, seed-averaged): difference, "
                             "95% percentile interval, p",
    "s/epoch": "training time per epoch (s), mean over seeds",
    "step × EW": "median training-step time ÷ EW's, same protocol",
    "images/s": "training images per second",
    "memory": "peak CUDA memory (MiB) on a GPU; on a CPU peak process RSS (MiB), labeled RSS",
}


def column_legend(resamples: int) -> dict[str, str]:
    """COLUMNS with the number of bootstrap resamples this report used filled in."""
    return {k: v.format(resamples=resamples) for k, v in COLUMNS.items()}


HIGHER_IS_BETTER = {"AUROC": True, "accuracy@0.5": True, "macro-F1": True, "balanced acc.": True,
                    "test loss": False, "Δm% vs EW": True, "s/epoch": False, "step × EW": False,
                    "images/s": True, "memory": False}


@dataclass(frozen=True)
class VariantResult:
    """Numbers of one variant: per-seed values and the aggregated row."""

    variant: str
    seeds: list[int]
    auroc: np.ndarray  # per seed
    row: dict[str, object]  # display values
    numbers: dict[str, float]  # the same as numbers (means), for marking the best and for claims
    vs_seeds: Difference
    vs_images: Difference


def leaderboard(protocol: Protocol, resamples: int = 1000) -> tuple[pd.DataFrame, list[VariantResult]]:
    """(display table, per-variant results) of one protocol."""
    per_run = per_run_numbers(protocol)
    ref = per_run[per_run["variant"] == REFERENCE]
    results = [_variant(protocol, per_run, ref, v, resamples) for v in protocol.variants()]
    table = pd.DataFrame([r.row for r in results])
    _mark_best(table, results)
    return table, results


def per_run_numbers(protocol: Protocol) -> pd.DataFrame:
    """One row per complete run: its task means, threshold metrics and costs."""
    rows = []
    epochs = max(protocol.epochs, 1)
    costs = protocol.costs.set_index("run_id") if not protocol.costs.empty else pd.DataFrame()
    for run in protocol.complete().itertuples():
        test = protocol.test[protocol.test["run_id"] == run.run_id]
        f1, bal = threshold_metrics(protocol, int(run.run_id))
        cost = costs.loc[run.run_id] if run.run_id in costs.index else None
        memory, memory_kind = (float("nan"), "")
        if cost is not None:
            cuda = cost.get("peak_cuda_mb")
            memory, memory_kind = (float(cuda), "CUDA") if pd.notna(cuda) else (float(cost["peak_rss_mb"]), "RSS")
        rows.append({
            "run_id": int(run.run_id), "variant": run.variant, "seed": int(run.seed),
            "auroc": test["auroc"].mean(), "accuracy": test["accuracy"].mean(), "loss": test["loss"].mean(),
            "macro_f1": f1, "balanced_accuracy": bal,
            "s_per_epoch": float(cost["train_s"]) / epochs if cost is not None else float("nan"),
            "step_s": float(cost["median_step_s"]) if cost is not None else float("nan"),
            "images_per_s": float(cost["images_per_s"]) if cost is not None else float("nan"),
            "memory_mb": memory, "memory_kind": memory_kind,
        })
    return pd.DataFrame(rows, columns=["run_id", "variant", "seed", "auroc", "accuracy", "loss", "macro_f1",
                                       "balanced_accuracy", "s_per_epoch", "step_s", "images_per_s",
                                       "memory_mb", "memory_kind"])


def threshold_metrics(protocol: Protocol, run_id: int) -> tuple[float, float]:
    """(macro-F1, mean balanced accuracy) on test at per-task thresholds chosen on validation."""
    val, test = protocol.predictions.get((run_id, "val")), protocol.predictions.get((run_id, "test"))
    if val is None or test is None:
        return float("nan"), float("nan")
    _, yv, pv = val
    _, yt, pt = test
    f1s, bals = [], []
    for t in range(yt.shape[1]):
        f1_at, youden_at = choose_thresholds(yv[:, t], pv[:, t])
        if 0 < yt[:, t].sum() < len(yt):
            f1s.append(f1_score(yt[:, t], pt[:, t] >= f1_at, zero_division=0))
            bals.append(balanced_accuracy_score(yt[:, t], pt[:, t] >= youden_at))
    return (float(np.mean(f1s)) if f1s else float("nan"), float(np.mean(bals)) if bals else float("nan"))


def choose_thresholds(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(threshold maximizing F1, threshold maximizing Youden's J) on one task's validation data; 0.5 when
    validation has one class only."""
    if not 0 < labels.sum() < len(labels):
        return 0.5, 0.5
    precision, recall, thresholds = precision_recall_curve(labels, probs)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    fpr, tpr, roc_thresholds = roc_curve(labels, probs)
    j = tpr - fpr
    j[~np.isfinite(roc_thresholds)] = -np.inf
    return float(thresholds[np.argmax(f1)]), float(roc_thresholds[np.argmax(j)])


def _variant(protocol: Protocol, per_run: pd.DataFrame, ref: pd.DataFrame, variant: str, resamples: int) -> VariantResult:
    runs = protocol.runs[protocol.runs["variant"] == variant]
    mine = per_run[per_run["variant"] == variant].sort_values("seed")
    statuses = runs["status"].value_counts().to_dict()
    others = ", ".join(f"{n} {s}" for s, n in statuses.items() if s != "complete")
    numbers = {
        "AUROC": mine["auroc"].mean(), "accuracy@0.5": mine["accuracy"].mean(), "macro-F1": mine["macro_f1"].mean(),
        "balanced acc.": mine["balanced_accuracy"].mean(), "test loss": mine["loss"].mean(),
        "s/epoch": mine["s_per_epoch"].mean(), "images/s": mine["images_per_s"].mean(),
        "memory": mine["memory_mb"].max() if len(mine) else float("nan"),
        "step × EW": mine["step_s"].mean() / ref["step_s"].mean() if len(ref) else float("nan"),
        "Δm% vs EW": _delta_m(protocol, mine, ref),
    }
    shared = sorted(set(mine["seed"]) & set(ref["seed"]))
    vs_seeds = Difference.missing()
    vs_images = Difference.missing()
    if variant != REFERENCE and shared:
        a = mine.set_index("seed").loc[shared]
        b = ref.set_index("seed").loc[shared]
        vs_seeds = paired_t(a["auroc"].to_numpy(), b["auroc"].to_numpy())
        vs_images = _bootstrap(protocol, a["run_id"].tolist(), b["run_id"].tolist(), resamples)
    sd = mine["auroc"].std(ddof=1) if len(mine) > 1 else float("nan")
    kind = mine["memory_kind"].iloc[0] if len(mine) else ""
    row = {
        "method": variant,
        "runs": f"{len(mine)}/{len(runs)}" + (f" ({others})" if others else ""),
        "AUROC": f"{numbers['AUROC']:.3f} ± {sd:.3f} (n={len(mine)})" if len(mine) > 1 else _f(numbers["AUROC"], 3),
        "accuracy@0.5": _f(numbers["accuracy@0.5"], 3),
        "macro-F1": _f(numbers["macro-F1"], 3),
        "balanced acc.": _f(numbers["balanced acc."], 3),
        "test loss": _f(numbers["test loss"], 4),
        "Δm% vs EW": _f(numbers["Δm% vs EW"], 2, signed=True),
        "ΔAUROC vs EW (seeds)": _diff(vs_seeds),
        "ΔAUROC vs EW (images)": _diff(vs_images),
        "s/epoch": _f(numbers["s/epoch"], 2),
        "step × EW": _f(numbers["step × EW"], 2),
        "images/s": _f(numbers["images/s"], 0),
        "memory": f"{numbers['memory']:.0f} {kind}" if np.isfinite(numbers["memory"]) else "—",
    }
    return VariantResult(variant, mine["seed"].tolist(), mine["auroc"].to_numpy(), row, numbers, vs_seeds, vs_images)


def _delta_m(protocol: Protocol, mine: pd.DataFrame, ref: pd.DataFrame) -> float:
    if mine.empty or ref.empty:
        return float("nan")

    def per_task(run_ids: list[int]) -> dict[str, np.ndarray]:
        rows = protocol.test[protocol.test["run_id"].isin(run_ids)].groupby("task")[["auroc", "loss"]].mean()
        return {"auroc": rows["auroc"].to_numpy(), "loss": rows["loss"].to_numpy()}

    return delta_m(per_task(mine["run_id"].tolist()), per_task(ref["run_id"].tolist()), {"loss"})


def _bootstrap(protocol: Protocol, runs: list[int], reference: list[int], resamples: int) -> Difference:
    pairs = [(protocol.predictions.get((a, "test")), protocol.predictions.get((b, "test"))) for a, b in zip(runs, reference)]
    if not pairs or any(a is None or b is None or a[0] != b[0] for a, b in pairs):
        return Difference.missing()  # predictions missing, or not on the same test images
    labels = pairs[0][0][1]
    return paired_bootstrap(labels, [a[2] for a, _ in pairs], [b[2] for _, b in pairs], resamples)


def _f(value: float, digits: int, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _diff(d: Difference) -> str:
    if not np.isfinite(d.mean):
        return "—"
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}] p={d.p:.2g}"


def _mark_best(table: pd.DataFrame, results: list[VariantResult]) -> None:
    for column, higher in HIGHER_IS_BETTER.items():
        values = np.array([r.numbers[column] for r in results], dtype=float)
        if column in ("Δm% vs EW", "step × EW"):
            values[[r.variant == REFERENCE for r in results]] = np.nan  # 0 and 1 by definition
        values[~np.isfinite(values)] = np.nan  # an infinity is no best value (the table shows it as —)
        if not np.isfinite(values).any():
            continue
        best = np.nanmax(values) if higher else np.nanmin(values)
        for i in np.flatnonzero(np.isclose(values, best, rtol=1e-9, atol=0)):  # ties: all of them
            table.loc[i, column] = f"**{table.loc[i, column]}**"
