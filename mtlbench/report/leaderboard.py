"""The leaderboard's numbers: one tidy numeric frame per protocol (variant × metric), formatted
only when shown (mtlbench.report.table).

Metrics, per variant. Counts: `runs_<status>` (runs_complete always). From the test predictions,
on the tasks with at least `min_positives` test positives (the others are listed, never averaged):
`auroc`, `ap`, `accuracy` (at p > 0.5), `macro_f1` and `balanced_accuracy` (at thresholds chosen
on validation), `ece` — value: seed mean, sd over seeds, lo/hi: 95% bootstrap interval over patients
and seeds jointly. Against the reference: `delta_<metric>` and `delta_m_pct` (Δm% on AUROC and AP;
value, lo, hi, bootstrap p, Holm-adjusted p over the protocol's variants), `delta_m_stl_pct` (Δm% against
the single-task baseline `stl`, where the protocol has it: the definition's own reference), `delta_auroc_seeds`
(paired t over seeds). Per run: `test_loss`, `s_per_epoch`, `images_per_s` (mean, sd),
`peak_cuda_mb` or `peak_rss_mb` (largest over seeds), `step_ratio` (÷ reference, geometric mean over
paired seeds with a log-scale t interval). `best` marks the value that is significantly best in its
column: better than every other variant with Holm-adjusted bootstrap p < ALPHA.

Timings of a run whose costs are marked unreliable (other processes loaded the machine while it
trained, machine_load.LOADED_SHARE) are left out of every time metric (`s_per_epoch`, `images_per_s`,
`step_ratio`); `timing_excluded` counts them per variant and `timing_unknown` the runs stored without a
load measurement (before schema 8), whose timings are used as before. Accuracy and memory keep every run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from mtlbench.report.load import SINGLE_TASK, Protocol
from mtlbench.report.per_run import MEMORY_KINDS, UNKNOWN, UNRELIABLE, per_run_numbers, timed_runs
from mtlbench.report.resampled import DELTA_M_METRICS, METRICS, VariantMetrics, run_metrics
from mtlbench.report.stats import (
    Difference,
    Resampling,
    bootstrap_difference,
    bootstrap_interval,
    delta_m,
    eligible_tasks,
    holm,
    log_ratio_interval,
    paired_t,
    task_mean,
)

DEFAULT_REFERENCE = "ew"
DEFAULT_MIN_POSITIVES = 20
ALPHA = 0.05
FRAME_COLUMNS = ["variant", "metric", "reference", "value", "sd", "lo", "hi", "p", "p_holm", "n", "best"]
PER_TASK_COLUMNS = ["variant", "task", "metric", "value", "lo", "hi", "positives", "eligible"]
PER_TASK_METRICS = ("auroc", "ap", "ece")
DELTAS = tuple(f"delta_{m}" for m in METRICS)
DELTA_M_STL = "delta_m_stl_pct"  # Δm% against the single-task baseline (`run --stl`), where it ran
RELATIVE = ("delta_m_pct", DELTA_M_STL, *DELTAS, "delta_auroc_seeds", "step_ratio")  # against the reference
# per-run column → metric, aggregated as mean and sd over seeds
PER_SEED = {"loss": "test_loss", "s_per_epoch": "s_per_epoch", "images_per_s": "images_per_s"}
TIME_COLUMNS = ("s_per_epoch", "step_s", "step_cpu_s", "images_per_s")  # per-run columns that other load distorts


@dataclass(frozen=True)
class Leaderboard:
    """The numbers of one protocol: `frame` is tidy (one row per variant × metric, FRAME_COLUMNS, all
    numbers numeric); `per_run` holds the per-run numbers it aggregates; `tasks` the protocol's task
    names with `positives` (test positives per task) and `eligible` (the tasks every mean covers)."""

    frame: pd.DataFrame
    per_run: pd.DataFrame
    reference: str
    tasks: tuple[str, ...] = ()
    positives: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    min_positives: int = DEFAULT_MIN_POSITIVES
    per_task: pd.DataFrame = field(default_factory=pd.DataFrame)  # PER_TASK_COLUMNS: every task, eligible or not
    resamples: int = 0
    patients: int = 0
    seeds: tuple[int, ...] = ()
    metrics: dict[str, VariantMetrics] = field(default_factory=dict)  # each variant's resampled test metrics
    labelled: np.ndarray | None = None  # labelled test images per task, where a dataset leaves labels out

    def variants(self) -> list[str]:
        """The variants in leaderboard order."""
        return list(dict.fromkeys(self.frame["variant"]))

    def values(self) -> pd.DataFrame:
        """`value` as a variant × metric table (leaderboard order; NaN where a variant lacks a metric)."""
        wide = self.frame.pivot(index="variant", columns="metric", values="value")
        return wide.reindex(index=self.variants(), columns=list(dict.fromkeys(self.frame["metric"])))

    def left_out(self) -> list[tuple[str, int]]:
        """(task, test positives) of the tasks no mean covers."""
        return [(t, int(n)) for t, n, ok in zip(self.tasks, self.positives, self.eligible) if not ok]


def reference_label(reference: str) -> str:
    """How the report names the reference in headers: its method, EW in capitals as the papers write it (a tuned
    variant's configuration is in its row)."""
    method = reference.split("[", 1)[0]
    return {"ew": "EW", SINGLE_TASK: "STL"}.get(method, method)


def leaderboard(
    protocol: Protocol,
    reference: str = DEFAULT_REFERENCE,
    resamples: int = 1000,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    rng_seed: int = 0,
) -> Leaderboard:
    """The leaderboard numbers of one protocol, compared against the variant named `reference`."""
    per_run = per_run_numbers(protocol)
    variants = protocol.variants()
    metrics = test_metrics(protocol, resamples, min_positives, rng_seed)
    for metric in ("auroc", "accuracy"):  # per run, the mean over the eligible tasks (what the leaderboard averages)
        per_run[f"{metric}_eligible"] = [
            float(task_mean(metrics[v].by_seed[s].observed[metric], metrics[v].eligible))
            if v in metrics and s in metrics[v].by_seed
            else float("nan")
            for v, s in zip(per_run["variant"], per_run["seed"])
        ]
    rows: list[dict] = []
    for v in variants:
        rows += _count_rows(protocol, per_run, v)
        rows += _metric_rows(metrics.get(v), v)
        rows += _cost_rows(per_run, v)
        if v == reference or reference not in variants:
            continue
        rows += _relative_rows(metrics.get(v), metrics.get(reference), per_run, v, reference)
    # Δm% as defined (Maninis et al.; Navon et al.): against single-task models, where the protocol has them
    stl = metrics.get(SINGLE_TASK)
    rows += [
        _diff_row(v, DELTA_M_STL, delta_m_difference(m, stl, seeds), SINGLE_TASK)
        for v, m in metrics.items()
        if stl is not None and v != SINGLE_TASK and (seeds := shared_seeds(m, stl))
    ]
    frame = pd.DataFrame(rows, columns=FRAME_COLUMNS).astype(
        {c: float for c in ("value", "sd", "lo", "hi", "p", "p_holm")} | {"n": int, "best": bool}
    )
    order = {v: i for i, v in enumerate(variants)}
    frame = frame.iloc[np.argsort([order[v] for v in frame["variant"]], kind="stable")].reset_index(drop=True)
    _adjust_and_mark(frame, metrics, reference)
    design = next(iter(metrics.values())).design if metrics else None
    labels = _test_labels(protocol)
    positives = np.nansum(labels, axis=0) if labels is not None else np.zeros(len(protocol.tasks()))
    labelled = (
        (~np.isnan(labels)).sum(axis=0) if labels is not None and labels.dtype.kind == "f" else None
    )  # labelled test images per task, where labels can be missing
    tasks = tuple(protocol.tasks())
    eligible = eligible_tasks(labels, min_positives) if labels is not None else np.zeros(len(positives), bool)
    return Leaderboard(
        frame,
        per_run,
        reference,
        tasks,
        positives,
        eligible,
        min_positives,
        per_task_frame(metrics, tasks, positives, eligible),
        resamples,
        design.patients if design else 0,
        design.seeds if design else (),
        metrics,
        labelled,
    )


def per_task_frame(
    metrics: dict[str, VariantMetrics], tasks: tuple[str, ...], positives: np.ndarray, eligible: np.ndarray
) -> pd.DataFrame:
    """Per variant, task and metric (AUROC, AP, ECE): the seed mean with its 95% bootstrap interval."""
    rows = []
    for variant, m in metrics.items():
        for metric in PER_TASK_METRICS:
            observed, resampled = m.per_task(metric)
            with warnings.catch_warnings():  # a task without positives is NaN on every resample
                warnings.simplefilter("ignore", RuntimeWarning)
                low, high = np.nanpercentile(resampled, [2.5, 97.5], axis=0)
            for i, task in enumerate(tasks):
                rows.append([variant, task, metric, observed[i], low[i], high[i], int(positives[i]), bool(eligible[i])])
    return pd.DataFrame(rows, columns=PER_TASK_COLUMNS)


def patient_of(image_id: str) -> str:
    """The patient of an NIH-style image name (`00000013_005.png` → `00000013`); otherwise the image itself
    (each image its own cluster). For predictions stored before schema 6, which hold no patient ids."""
    head, sep, tail = image_id.partition("_")
    return head if sep and head.isdigit() and tail[:3].isdigit() else image_id


def _test_labels(protocol: Protocol) -> np.ndarray | None:
    for (_run_id, split), (_, labels, _) in sorted(protocol.predictions.items()):
        if split == "test":
            return labels
    return None


def test_metrics(
    protocol: Protocol, resamples: int, min_positives: int, rng_seed: int = 0
) -> dict[str, VariantMetrics]:
    """Per variant with test predictions, its runs' metrics on the protocol's one resampling design.

    Runs whose test predictions are on other images than the first run's are left out (they cannot
    be paired); so are runs without predictions.
    """
    tests = {rid: pred for (rid, split), pred in sorted(protocol.predictions.items()) if split == "test"}
    if not tests:
        return {}
    first = next(iter(tests))
    ids, labels, _ = tests[first]
    complete = protocol.complete()
    seeds = tuple(sorted(set(int(s) for s in complete["seed"])))
    patients = protocol.patients.get((first, "test")) or [patient_of(i) for i in ids]  # stored, else from the name
    design = Resampling.of(np.array(patients), seeds, resamples, rng_seed)
    eligible = eligible_tasks(labels, min_positives)
    out: dict[str, VariantMetrics] = {}
    for run in complete.itertuples():
        pred = tests.get(int(run.run_id))
        if pred is None or pred[0] != ids:
            continue
        val = protocol.predictions.get((int(run.run_id), "val"))
        metrics = run_metrics(labels, pred[2], (val[1], val[2]) if val is not None else None, design)
        out.setdefault(run.variant, VariantMetrics({}, design, eligible)).by_seed[int(run.seed)] = metrics
    return out


def _count_rows(protocol: Protocol, per_run: pd.DataFrame, variant: str) -> list[dict]:
    runs = protocol.runs[protocol.runs["variant"] == variant]
    complete = int((per_run["variant"] == variant).sum())
    others = [(s, int(n)) for s, n in runs["status"].value_counts().items() if s != "complete"]
    return [_row(variant, f"runs_{status}", count, n=count) for status, count in [("complete", complete), *others]]


def _metric_rows(metrics: VariantMetrics | None, variant: str) -> list[dict]:
    if metrics is None:
        return []
    rows = []
    for metric in METRICS:
        observed, resampled = metrics.statistic(metric)
        interval = bootstrap_interval(observed, resampled)
        seeds = metrics.seed_values(metric)
        rows.append(
            _row(
                variant,
                metric,
                observed,
                n=len(seeds),
                sd=np.std(seeds, ddof=1) if len(seeds) > 1 else float("nan"),
                lo=interval.low,
                hi=interval.high,
            )
        )
    return rows


def _cost_rows(per_run: pd.DataFrame, variant: str) -> list[dict]:
    mine = per_run[per_run["variant"] == variant]
    timed = timed_runs(mine)
    rows = []
    for column, metric in PER_SEED.items():
        values = (timed if column in TIME_COLUMNS else mine)[column]
        if values.count():
            rows.append(_row(variant, metric, values.mean(), sd=values.std(ddof=1), n=values.count()))
    for kind in MEMORY_KINDS:
        peaks = mine.loc[mine["memory_kind"] == kind, "memory_mb"]
        if peaks.count():
            rows.append(_row(variant, f"peak_{kind}_mb", peaks.max(), n=peaks.count()))
    for state, metric in ((UNRELIABLE, "timing_excluded"), (UNKNOWN, "timing_unknown")):
        count = int((mine["timing"] == state).sum())
        if count:
            rows.append(_row(variant, metric, count, n=count))
    return rows


def _relative_rows(
    mine: VariantMetrics | None, ref: VariantMetrics | None, per_run: pd.DataFrame, variant: str, reference: str
) -> list[dict]:
    rows = []
    if mine is not None and ref is not None:
        shared = shared_seeds(mine, ref)
        if shared:
            rows.append(_diff_row(variant, "delta_m_pct", delta_m_difference(mine, ref, shared), reference))
            for metric in METRICS:
                rows.append(_diff_row(variant, f"delta_{metric}", difference(mine, ref, metric, shared), reference))
            a = np.array([mine.seed_values("auroc")[mine.seeds().index(s)] for s in shared])
            b = np.array([ref.seed_values("auroc")[ref.seeds().index(s)] for s in shared])
            rows.append(_diff_row(variant, "delta_auroc_seeds", paired_t(a, b), reference))
    timed = timed_runs(per_run)  # a pair with a run timed on a loaded machine is no ratio
    a_runs = timed[timed["variant"] == variant].set_index("seed")["step_s"]
    b_runs = timed[timed["variant"] == reference].set_index("seed")["step_s"]
    paired = sorted(set(a_runs.index) & set(b_runs.index))
    if paired:
        ratio = log_ratio_interval(a_runs.loc[paired].to_numpy(), b_runs.loc[paired].to_numpy())
        rows.append(_diff_row(variant, "step_ratio", ratio, reference))
    return rows


def difference(a: VariantMetrics, b: VariantMetrics, metric: str, seeds: list[int]) -> Difference:
    """a − b of a metric's mean over eligible tasks on the seeds both have, with its bootstrap interval and p."""
    oa, ra = a.statistic(metric, seeds)
    ob, rb = b.statistic(metric, seeds)
    return bootstrap_difference(oa - ob, ra - rb)


def delta_m_values(a: VariantMetrics, ref: VariantMetrics, seeds: list[int]) -> tuple[float, np.ndarray]:
    """(observed, resampled (B,)) Δm% of `a` against `ref` on AUROC and AP over the eligible tasks."""
    keep = a.eligible
    mine = {m: a.per_task(m, seeds) for m in DELTA_M_METRICS}
    theirs = {m: ref.per_task(m, seeds) for m in DELTA_M_METRICS}
    observed = delta_m({m: v[0][keep] for m, v in mine.items()}, {m: v[0][keep] for m, v in theirs.items()})
    resampled = delta_m({m: v[1][:, keep] for m, v in mine.items()}, {m: v[1][:, keep] for m, v in theirs.items()})
    return float(observed), resampled


def delta_m_difference(a: VariantMetrics, ref: VariantMetrics, seeds: list[int]) -> Difference:
    """Δm% of `a` against `ref` with its bootstrap interval and the p of Δm% ≠ 0."""
    return bootstrap_difference(*delta_m_values(a, ref, seeds))


def significantly_best(
    candidates: dict[str, tuple[float, np.ndarray]],
    higher: bool,
    paired: Callable[[str, str], tuple[float, np.ndarray]] | None = None,
) -> str | None:
    """The variant whose observed value is best, if it beats every other one with Holm-adjusted bootstrap
    p < ALPHA; None otherwise or with fewer than two. The differences best − other are `paired(best, other)`
    (observed, resampled) where given (e.g. on the seeds both have), else those of the candidates' own values
    on the same resamples."""
    finite = {v: c for v, c in candidates.items() if np.isfinite(c[0])}
    if len(finite) < 2:
        return None
    sign = 1.0 if higher else -1.0
    best = max(finite, key=lambda v: sign * finite[v][0])
    p = []
    for v, (o, r) in finite.items():
        if v == best:
            continue
        observed, resampled = paired(best, v) if paired else (finite[best][0] - o, finite[best][1] - r)
        with np.errstate(invalid="ignore"):  # resamples where a value is undefined (NaN) are dropped
            p.append(bootstrap_difference(sign * observed, sign * np.asarray(resampled)).p)
    adjusted = holm(np.array(p))
    return best if np.all(adjusted < ALPHA) and np.all(np.isfinite(adjusted)) else None


def shared_seeds(*variants: VariantMetrics) -> list[int]:
    """The seeds every one of `variants` has a complete run of."""
    return sorted(set.intersection(*(set(v.seeds()) for v in variants)))


def _adjust_and_mark(frame: pd.DataFrame, metrics: dict[str, VariantMetrics], reference: str) -> None:
    """Holm-adjust each relative metric's p over the protocol's variants; mark significantly best values.
    Every pairwise test behind a mark compares two variants on the seeds both have (a variant with a failed
    seed is compared on its complete ones, against the same seeds of the other)."""
    for metric in frame["metric"].unique():
        rows = frame["metric"] == metric
        if frame.loc[rows, "p"].notna().any():
            frame.loc[rows, "p_holm"] = holm(frame.loc[rows, "p"].to_numpy())
    if len(metrics) < 2:
        return
    for metric, higher in METRICS.items():

        def on_shared_seeds(a: str, b: str, metric: str = metric) -> tuple[float, np.ndarray]:
            seeds = shared_seeds(metrics[a], metrics[b])
            (oa, ra), (ob, rb) = metrics[a].statistic(metric, seeds), metrics[b].statistic(metric, seeds)
            return oa - ob, ra - rb

        candidates = {v: m.statistic(metric) for v, m in metrics.items()}
        winner = significantly_best(candidates, higher, on_shared_seeds)
        if winner is not None:
            frame.loc[(frame["variant"] == winner) & (frame["metric"] == metric), "best"] = True
    for against, metric in ((reference, "delta_m_pct"), (SINGLE_TASK, DELTA_M_STL)):
        if against in metrics:
            _mark_delta_m(frame, metrics, against, metric)


def _mark_delta_m(frame: pd.DataFrame, metrics: dict[str, VariantMetrics], against: str, metric: str) -> None:
    """Bold the Δm% (against `against`, stored as `metric`) that is significantly best, if one is."""
    ref = metrics[against]
    deltas = {}
    for v, m in metrics.items():
        if v != against and shared_seeds(m, ref):
            deltas[v] = delta_m_values(m, ref, shared_seeds(m, ref))

    def delta_m_on_shared_seeds(a: str, b: str) -> tuple[float, np.ndarray]:
        seeds = shared_seeds(metrics[a], metrics[b], ref)
        if not seeds:
            return float("nan"), np.full(1, np.nan)
        (oa, ra), (ob, rb) = delta_m_values(metrics[a], ref, seeds), delta_m_values(metrics[b], ref, seeds)
        return oa - ob, ra - rb

    winner = significantly_best(deltas, True, delta_m_on_shared_seeds)
    if winner is not None:
        frame.loc[(frame["variant"] == winner) & (frame["metric"] == metric), "best"] = True


def _diff_row(variant: str, metric: str, d: Difference, reference: str) -> dict:
    return _row(variant, metric, d.mean, lo=d.low, hi=d.high, p=d.p, n=d.n, reference=reference)


def _row(
    variant: str,
    metric: str,
    value: float,
    n: int,
    sd: float = float("nan"),
    lo: float = float("nan"),
    hi: float = float("nan"),
    p: float = float("nan"),
    reference: str | None = None,
) -> dict:
    return {
        "variant": variant,
        "metric": metric,
        "reference": reference,
        "value": float(value),
        "sd": float(sd),
        "lo": float(lo),
        "hi": float(hi),
        "p": float(p),
        "p_holm": float("nan"),
        "n": int(n),
        "best": False,
    }
