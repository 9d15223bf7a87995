"""The leaderboard's numbers: one tidy numeric frame per protocol (variant × metric), formatted
only when shown (mtlbench.report.table).

Metrics, per variant: `runs_<status>` (counts; runs_complete always), `auroc`, `accuracy` (at p > 0.5),
`macro_f1` and `balanced_accuracy` (at thresholds chosen on validation), `test_loss`, `s_per_epoch`,
`images_per_s` (value: mean over seeds, with sd), `peak_cuda_mb` or `peak_rss_mb` (value: largest
over seeds; which one, from what the runs measured), and against the reference `delta_m_pct`,
`delta_auroc_seeds` (paired t), `delta_auroc_images` (paired bootstrap; both with lo, hi, p) and
`step_ratio`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score, precision_recall_curve, roc_curve

from mtlbench.report.load import Protocol
from mtlbench.report.stats import Difference, delta_m, paired_bootstrap, paired_t

DEFAULT_REFERENCE = "ew"
FRAME_COLUMNS = ["variant", "metric", "reference", "value", "sd", "lo", "hi", "p", "n"]
RELATIVE = ("delta_m_pct", "delta_auroc_seeds", "delta_auroc_images", "step_ratio")  # against the reference
# per-run column → metric, aggregated as mean and sd over seeds
PER_SEED = {"auroc": "auroc", "accuracy": "accuracy", "macro_f1": "macro_f1",
            "balanced_accuracy": "balanced_accuracy", "loss": "test_loss", "s_per_epoch": "s_per_epoch",
            "images_per_s": "images_per_s"}
MEMORY_KINDS = {"cuda": "CUDA", "rss": "RSS"}  # preferred first


@dataclass(frozen=True)
class Leaderboard:
    """The numbers of one protocol: `frame` is tidy (one row per variant × metric, FRAME_COLUMNS, all
    numbers numeric); `per_run` holds the per-run numbers it aggregates."""

    frame: pd.DataFrame
    per_run: pd.DataFrame
    reference: str

    def variants(self) -> list[str]:
        """The variants in leaderboard order."""
        return list(dict.fromkeys(self.frame["variant"]))

    def values(self) -> pd.DataFrame:
        """`value` as a variant × metric table (leaderboard order; NaN where a variant lacks a metric)."""
        wide = self.frame.pivot(index="variant", columns="metric", values="value")
        return wide.reindex(index=self.variants(), columns=list(dict.fromkeys(self.frame["metric"])))


def peak_memory(values: pd.DataFrame, variant: str) -> tuple[float, str]:
    """(peak MiB, "CUDA" | "RSS") of a variant from a `Leaderboard.values()` table; (NaN, "") if none."""
    for kind, label in MEMORY_KINDS.items():
        metric = f"peak_{kind}_mb"
        if metric in values.columns and np.isfinite(values.loc[variant, metric]):
            return float(values.loc[variant, metric]), label
    return float("nan"), ""


def reference_label(reference: str) -> str:
    """How the report names the reference: EW in capitals as the papers write it, others as stored."""
    return "EW" if reference == "ew" else reference


def leaderboard(protocol: Protocol, reference: str = DEFAULT_REFERENCE, resamples: int = 1000) -> Leaderboard:
    """The leaderboard numbers of one protocol, compared against the variant named `reference`."""
    per_run = per_run_numbers(protocol)
    ref = per_run[per_run["variant"] == reference]
    rows = [row for v in protocol.variants() for row in _variant_rows(protocol, per_run, ref, v, reference, resamples)]
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS).astype(
        {c: float for c in ("value", "sd", "lo", "hi", "p")} | {"n": int})
    return Leaderboard(frame, per_run, reference)


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
            memory, memory_kind = (float(cuda), "cuda") if pd.notna(cuda) else (float(cost["peak_rss_mb"]), "rss")
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


def _variant_rows(protocol: Protocol, per_run: pd.DataFrame, ref: pd.DataFrame, variant: str, reference: str,
                  resamples: int) -> list[dict]:
    """The frame's rows of one variant."""
    runs = protocol.runs[protocol.runs["variant"] == variant]
    mine = per_run[per_run["variant"] == variant].sort_values("seed")
    statuses = runs["status"].value_counts()
    rows = [_row(variant, f"runs_{status}", count, n=count)
            for status, count in [("complete", len(mine)), *((s, n) for s, n in statuses.items() if s != "complete")]]
    for column, metric in PER_SEED.items():
        values = mine[column]
        rows.append(_row(variant, metric, values.mean(), sd=values.std(ddof=1), n=values.count()))
    for kind in MEMORY_KINDS:
        peaks = mine.loc[mine["memory_kind"] == kind, "memory_mb"]
        if peaks.count():
            rows.append(_row(variant, f"peak_{kind}_mb", peaks.max(), n=peaks.count()))
    shared = sorted(set(mine["seed"]) & set(ref["seed"]))
    vs_seeds = vs_images = Difference.missing()
    if variant != reference and shared:
        a = mine.set_index("seed").loc[shared]
        b = ref.set_index("seed").loc[shared]
        vs_seeds = paired_t(a["auroc"].to_numpy(), b["auroc"].to_numpy())
        vs_images = _bootstrap(protocol, a["run_id"].tolist(), b["run_id"].tolist(), resamples)
    step = mine["step_s"].mean() / ref["step_s"].mean() if len(ref) else float("nan")
    rows += [
        _row(variant, "delta_m_pct", _delta_m(protocol, mine, ref), n=len(mine), reference=reference),
        *(_row(variant, metric, d.mean, lo=d.low, hi=d.high, p=d.p, n=d.n, reference=reference)
          for metric, d in (("delta_auroc_seeds", vs_seeds), ("delta_auroc_images", vs_images))),
        _row(variant, "step_ratio", step, n=mine["step_s"].count(), reference=reference),
    ]
    return rows


def _row(variant: str, metric: str, value: float, n: int, sd: float = float("nan"), lo: float = float("nan"),
         hi: float = float("nan"), p: float = float("nan"), reference: str | None = None) -> dict:
    return {"variant": variant, "metric": metric, "reference": reference, "value": float(value), "sd": float(sd),
            "lo": float(lo), "hi": float(hi), "p": float(p), "n": int(n)}


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
