"""`mtlbench report` end to end.

Every test but one reads a results database written directly by tests/results_fixture.py (no
training), whose predictions make some facts true by construction (pcgrad's scores separate every
task perfectly, graddrop's are EW's own, EW's are noise), and checks the report's numbers against
values computed here from the stored predictions with scikit-learn, scipy and numpy. One `slow` test
renders the report of a real sweep.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from sklearn.metrics import average_precision_score, balanced_accuracy_score, f1_score, log_loss, roc_auc_score

from mtlbench.cli import main
from mtlbench.report.figures import FIGURES
from mtlbench.results.store import ResultsStore
from mtlbench.tasks import TASK_NAMES
from tests.sweeps import report_args, smoke_sweep
from tests.results_fixture import METHODS, TEST_POSITIVES, Failure, ProtocolSpec, write_protocol

RESAMPLES = 200
MIN_POSITIVES = 20  # the report's default
ELIGIBLE = np.array([TEST_POSITIVES[t] >= MIN_POSITIVES for t in TASK_NAMES])
LEFT_OUT = "Pneumonia (12), Edema (19), Fibrosis (15), Hernia (1)"  # TEST_POSITIVES below 20, in task order
QUALITY = ("auroc", "ap", "accuracy", "macro_f1", "balanced_accuracy", "ece")
RELATIVE = ("delta_m_pct", *(f"delta_{m}" for m in QUALITY), "delta_auroc_seeds", "step_ratio")
FLOOR = 2 / (RESAMPLES + 1)  # the smallest two-sided bootstrap p of RESAMPLES resamples


@pytest.fixture(scope="module")
def report(results_db, tmp_path_factory):
    """(database, ProtocolRecord, report folder) of the fixture database, rendered with 200 resamples."""
    path, record = results_db
    out = tmp_path_factory.mktemp("report") / "out"
    assert main(["report", "--results", str(path), "--out", str(out), "--quiet", "--resamples", str(RESAMPLES)]) == 0
    return path, record, out


def _frame(out: Path, name: str = "leaderboard") -> pd.DataFrame:
    """A table's CSV: `leaderboard` (one row per variant × metric) or `per_task`."""
    (csv,) = (out / "tables").glob(f"{name}_*.csv")
    return pd.read_csv(csv)


def _md_table(md: str, heading: str) -> pd.DataFrame:
    """The Markdown table under `### heading`, as strings (bold kept)."""
    lines = md.split(f"### {heading}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header, rows = lines[0], lines[2:]
    cells = [[c.strip() for c in row.strip("|").split(" | ")] for row in [header, *rows]]
    return pd.DataFrame(cells[1:], columns=cells[0]).set_index("method")


# --------------------------------------------------------------------------- independent computations


def _stored(path: Path, record, method: str, seed: int, split: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The predictions stored for a run, read back through the store (and checked against what was written)."""
    with ResultsStore(path) as store:
        ids, labels, probs = store.predictions(record.run_ids[(method, seed)], split)
    wrote = record.test_probs if split == "test" else record.val_probs
    assert np.array_equal(probs, wrote[(method, seed)])
    return ids, labels, probs


def _thresholds(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """The validation thresholds t (predict p ≥ t) that maximize F1 (the lowest of ties) and Youden's J
    (the highest of ties), by trying every validation probability; 0.5 when validation holds one class."""
    if not 0 < y.sum() < len(y):
        return 0.5, 0.5
    candidates = np.unique(p)  # ascending
    predicted = p[None, :] >= candidates[:, None]
    tp, fp = (predicted & (y == 1)).sum(axis=1), (predicted & (y == 0)).sum(axis=1)
    fn = y.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn)
    j = tp / y.sum() - fp / (len(y) - y.sum())
    return float(candidates[np.argmax(f1)]), float(candidates[::-1][np.argmax(j[::-1])])


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    which = np.minimum((p.astype(np.float64) * bins).astype(int), bins - 1)
    return sum(abs(y[which == b].sum() - p[which == b].astype(np.float64).sum()) for b in range(bins)) / len(y)


def _per_task(path: Path, record, method: str, seed: int) -> dict[str, np.ndarray]:
    """Per-task test metrics of one run from its stored predictions (scikit-learn; thresholds from val)."""
    _, y, p = _stored(path, record, method, seed, "test")
    _, yv, pv = _stored(path, record, method, seed, "val")
    out = {m: np.full(len(TASK_NAMES), np.nan) for m in QUALITY}
    for t in range(len(TASK_NAMES)):
        f1_at, j_at = _thresholds(yv[:, t], pv[:, t])
        out["auroc"][t] = roc_auc_score(y[:, t], p[:, t])
        out["ap"][t] = average_precision_score(y[:, t], p[:, t])
        out["accuracy"][t] = np.mean((p[:, t] > 0.5) == y[:, t])
        out["macro_f1"][t] = f1_score(y[:, t], p[:, t] >= f1_at, zero_division=0)
        out["balanced_accuracy"][t] = balanced_accuracy_score(y[:, t], p[:, t] >= j_at)
        out["ece"][t] = _ece(y[:, t], p[:, t])
    return out


@pytest.fixture(scope="module")
def expected(report) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """{(method, seed): per-task metrics} of every complete run."""
    path, record, _ = report
    return {key: _per_task(path, record, *key) for key, status in record.status.items() if status == "complete"}


def _seed_means(expected, method: str, metric: str, seeds: list[int]) -> np.ndarray:
    """Per seed, the mean over the eligible tasks (what the report averages and takes the sd of)."""
    return np.array([expected[(method, s)][metric][ELIGIBLE].mean() for s in seeds])


def _delta_m(expected, method: str, reference: str, seeds: list[int]) -> float:
    """Δm% on AUROC and AP over the eligible tasks, per-task values averaged over `seeds` first."""
    terms = []
    for metric in ("auroc", "ap"):
        mine = np.mean([expected[(method, s)][metric] for s in seeds], axis=0)[ELIGIBLE]
        ref = np.mean([expected[(reference, s)][metric] for s in seeds], axis=0)[ELIGIBLE]
        terms.append((mine - ref) / np.abs(ref))
    return 100 * np.concatenate(terms).mean()


def _holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment, written out."""
    out, running = np.full(len(p), np.nan), 0.0
    tested = [i for i in np.argsort(p, kind="stable") if np.isfinite(p[i])]
    for rank, i in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p[i]))
        out[i] = running
    return out


def _step_ratio(record, method: str, reference: str) -> tuple[float, float, float]:
    """Geometric mean of per-seed median-step ratios with its log-scale t interval."""
    seeds = sorted(set(record.complete(method)) & set(record.complete(reference)))
    logs = np.log(
        [record.costs[(method, s)]["median_step_s"] / record.costs[(reference, s)]["median_step_s"] for s in seeds]
    )
    half = stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / np.sqrt(len(logs))
    return float(np.exp(logs.mean())), float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))


# --------------------------------------------------------------------------- files and their numbers


def test_every_file_is_written(report) -> None:
    _, _, out = report
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES) and 'src="http' not in html
    assert sorted(p.name.split("_cxr14")[0] for p in (out / "tables").iterdir()) == [
        "leaderboard",
        "leaderboard",
        "per_task",
    ]
    for name in FIGURES:
        assert len(list(out.glob(f"figures/*/{name}.png"))) == 1 and len(list(out.glob(f"figures/*/{name}.svg"))) == 1
    md = (out / "report.md").read_text()
    for heading in (
        "Leaderboard",
        "Per-task test AUROC",
        "Runs that did not complete",
        "The DeepChest paper's claims, checked against this data",
        "Figures",
    ):
        assert md.count(f"### {heading}\n") == 1, heading
    assert "15 finished run(s) in 1 protocol(s)" in md
    assert list(_md_table(md, "Leaderboard").index) == list(METHODS)
    assert list(_md_table(md, "Per-task test AUROC").index) == list(METHODS)
    assert md.count("![") == len(FIGURES) and html.count("<tr>") == 2 * len(METHODS)  # two tables' body rows
    tex = next((out / "tables").glob("*.tex")).read_text()
    assert tex.count(r"\\") == 1 + len(METHODS) and "**" not in tex
    assert r"\textbf{1.000 [1.000, 1.000]}" in tex  # pcgrad's AUROC: significantly best, in bold


def test_the_csv_is_the_numeric_frame(report) -> None:
    _, record, out = report
    frame = _frame(out)
    assert list(frame.columns) == [
        "variant",
        "metric",
        "reference",
        "value",
        "sd",
        "lo",
        "hi",
        "p",
        "p_holm",
        "n",
        "best",
    ]
    assert all(pd.api.types.is_float_dtype(frame[c]) for c in ("value", "sd", "lo", "hi", "p", "p_holm"))
    assert pd.api.types.is_integer_dtype(frame["n"]) and pd.api.types.is_bool_dtype(frame["best"])
    assert list(dict.fromkeys(frame["variant"])) == list(METHODS) and not frame.duplicated(["variant", "metric"]).any()
    common = {"runs_complete", *QUALITY, "test_loss", "s_per_epoch", "images_per_s", "peak_rss_mb"}  # CPU: RSS only
    others = {"mgda": {"runs_diverged"}, "graddrop": {"runs_failed"}}
    wanted = {m: common | others.get(m, set()) | (set(RELATIVE) if m != "ew" else set()) for m in METHODS}
    assert frame.groupby("variant")["metric"].apply(set).to_dict() == wanted
    relative = frame[frame["reference"].notna()]
    assert set(relative["reference"]) == {"ew"} and set(relative["metric"]) == set(RELATIVE)
    counts = frame[frame["metric"].str.startswith("runs_")].set_index(["variant", "metric"])["value"].to_dict()
    assert counts == {
        **{(m, "runs_complete"): float(len(record.complete(m))) for m in METHODS},
        ("mgda", "runs_diverged"): 1.0,
        ("graddrop", "runs_failed"): 1.0,
    }


def test_quality_metrics_match_the_stored_predictions(report, expected) -> None:
    """AUROC, AP, accuracy@0.5, macro-F1, balanced accuracy and ECE: the seed mean of the mean over tasks with
    ≥ 20 test positives, each recomputed here with scikit-learn from the stored predictions."""
    _, record, out = report
    frame = _frame(out).set_index(["variant", "metric"])
    for method in METHODS:
        seeds = record.complete(method)
        for metric in QUALITY:
            per_seed = _seed_means(expected, method, metric, seeds)
            row = frame.loc[(method, metric)]
            assert row["value"] == pytest.approx(per_seed.mean(), rel=1e-9, abs=1e-12), (method, metric)
            assert row["sd"] == pytest.approx(per_seed.std(ddof=1), rel=1e-9, abs=1e-12), (method, metric)
            assert row["n"] == len(seeds) and row["lo"] <= row["hi"]
    # by construction: pcgrad separates every task, so every resample agrees
    for metric in ("auroc", "ap", "accuracy"):
        assert tuple(frame.loc[("pcgrad", metric), ["value", "lo", "hi"]]) == (1.0, 1.0, 1.0)


def test_per_task_csv_matches_the_stored_predictions(report, expected) -> None:
    _, record, out = report
    per_task = _frame(out, "per_task")
    assert list(per_task.columns) == ["variant", "task", "metric", "value", "lo", "hi", "positives", "eligible"]
    assert len(per_task) == len(METHODS) * 3 * len(TASK_NAMES)
    for row in per_task.itertuples():
        t = TASK_NAMES.index(row.task)
        seeds = record.complete(row.variant)
        assert row.value == pytest.approx(
            np.mean([expected[(row.variant, s)][row.metric][t] for s in seeds]), rel=1e-9, abs=1e-12
        ), row
        assert (row.positives, row.eligible) == (TEST_POSITIVES[row.task], bool(ELIGIBLE[t]))
    hernia = per_task[(per_task["task"] == "Hernia") & (per_task["metric"] == "auroc")].set_index("variant")
    assert hernia.loc["pcgrad", "value"] == 1.0  # one positive, ranked above every negative


def test_costs_and_counts_match_the_store(report) -> None:
    path, record, out = report
    frame = _frame(out).set_index(["variant", "metric"])
    with closing(sqlite3.connect(path)) as con:
        losses = pd.read_sql(
            "SELECT r.method, r.seed, m.task, m.loss FROM metrics m JOIN runs r USING (run_id) WHERE m.split='test'",
            con,
        )
    for method in METHODS:
        seeds = record.complete(method)
        costs = pd.DataFrame([record.costs[(method, s)] for s in seeds])
        loss = [
            np.mean(
                [
                    log_loss(
                        record.test_labels[:, t], record.test_probs[(method, s)][:, t].astype(np.float64), labels=[0, 1]
                    )
                    for t in range(len(TASK_NAMES))
                ]
            )
            for s in seeds
        ]
        stored = losses[losses["method"] == method].groupby("seed")["loss"].mean()
        assert stored.to_numpy() == pytest.approx(loss, rel=1e-6)  # the stored loss is the BCE of the predictions
        assert frame.loc[(method, "test_loss"), "value"] == pytest.approx(stored.mean(), rel=1e-12)
        assert frame.loc[(method, "test_loss"), "sd"] == pytest.approx(stored.std(ddof=1), rel=1e-9)
        assert frame.loc[(method, "s_per_epoch"), "value"] == pytest.approx((costs["train_s"] / 3).mean(), rel=1e-12)
        assert frame.loc[(method, "images_per_s"), "value"] == pytest.approx(costs["images_per_s"].mean(), rel=1e-12)
        assert frame.loc[(method, "peak_rss_mb"), "value"] == costs["peak_rss_mb"].max()
        assert costs["peak_cuda_mb"].isna().all()  # so the peak shown is RSS


def test_relative_metrics_match_the_stored_predictions(report, expected) -> None:
    """Against EW: Δ of each metric and Δm% on the seeds both have, the paired t over seeds, the step ratio;
    Holm over the variants; and what holds by construction (graddrop is EW, pcgrad is perfect)."""
    _, record, out = report
    frame = _frame(out)
    indexed = frame.set_index(["variant", "metric"])
    for method in METHODS[1:]:
        seeds = sorted(set(record.complete(method)) & set(record.complete("ew")))
        for metric in QUALITY:
            value = (_seed_means(expected, method, metric, seeds) - _seed_means(expected, "ew", metric, seeds)).mean()
            assert indexed.loc[(method, f"delta_{metric}"), "value"] == pytest.approx(value, rel=1e-9, abs=1e-12)
        assert indexed.loc[(method, "delta_m_pct"), "value"] == pytest.approx(
            _delta_m(expected, method, "ew", seeds), rel=1e-9, abs=1e-12
        )
        mine, ew = _seed_means(expected, method, "auroc", seeds), _seed_means(expected, "ew", "auroc", seeds)
        row = indexed.loc[(method, "delta_auroc_seeds")]
        assert row["value"] == pytest.approx((mine - ew).mean(), rel=1e-9, abs=1e-12) and row["n"] == len(seeds)
        if method != "graddrop":
            t = stats.ttest_rel(mine, ew)
            ci = t.confidence_interval(0.95)
            assert (row["lo"], row["hi"], row["p"]) == pytest.approx((ci.low, ci.high, t.pvalue), rel=1e-9)
        ratio = indexed.loc[(method, "step_ratio")]
        assert (ratio["value"], ratio["lo"], ratio["hi"]) == pytest.approx(_step_ratio(record, method, "ew"), rel=1e-9)
    for metric in set(RELATIVE) - {"delta_auroc_seeds", "step_ratio"}:
        rows = frame[frame["metric"] == metric]
        assert rows["p_holm"].to_numpy() == pytest.approx(_holm(rows["p"].to_numpy()), nan_ok=True), metric
    # graddrop's predictions are EW's on their shared seeds (0, 1): every difference is exactly 0, p = 1
    for metric in ("delta_m_pct", *(f"delta_{m}" for m in QUALITY)):
        assert tuple(indexed.loc[("graddrop", metric), ["value", "lo", "hi", "p"]]) == (0.0, 0.0, 0.0, 1.0), metric
    same = indexed.loc[("graddrop", "delta_auroc_seeds")]
    assert (same["value"], same["lo"], same["hi"]) == (0.0, 0.0, 0.0) and np.isnan(same["p"])  # no spread: no test
    # pcgrad is 1 on every resample, EW below: no resample on the far side, p at its floor; Holm over 4 variants
    pcgrad = indexed.loc[("pcgrad", "delta_auroc")]
    assert pcgrad["p"] == pytest.approx(FLOOR) and pcgrad["p_holm"] == pytest.approx(4 * FLOOR)
    best = frame[frame["best"]]
    assert {("pcgrad", m) for m in ("auroc", "ap", "accuracy")} <= set(zip(best["variant"], best["metric"]))
    assert not ({"ew", "graddrop"} & set(best["variant"])) and set(best["metric"]) <= {*QUALITY, "delta_m_pct"}
    assert len(best) == best["metric"].nunique()  # at most one best per column


def test_the_shown_table_formats_the_frame(report) -> None:
    """report.md shows the CSV's numbers, formatted: nothing computed twice, nothing parsed."""
    _, record, out = report
    frame = _frame(out).set_index(["variant", "metric"])
    md = (out / "report.md").read_text()
    table = _md_table(md, "Leaderboard")

    def shown(method: str, metric: str, digits: int, signed: bool = False, p: str = "") -> str:
        row = frame.loc[(method, metric)]
        f = (lambda x: f"{x:+.{digits}f}") if signed else (lambda x: f"{x:.{digits}f}")
        text = f(row["value"]) + (f" [{f(row['lo'])}, {f(row['hi'])}]" if np.isfinite(row["lo"]) else "")
        if p and np.isfinite(row[p]):  # the raw p at the bootstrap's limit (2 / (B + 1)): adjusted or not, a bound
            bound = p == "p_holm" and row["p"] <= 2 / (row["n"] + 1) * (1 + 1e-9)  # "p": a paired t, exact
            text += f" p{'≤' if bound else '='}{row[p]:.2g}"
        return f"**{text}**" if row["best"] else text

    assert list(table.columns) == [
        "runs",
        "AUROC",
        "AP",
        "accuracy@0.5",
        "macro-F1",
        "balanced acc.",
        "ECE",
        "test loss",
        "Δm% vs EW",
        "ΔAUROC vs EW",
        "ΔAUROC vs EW (seeds)",
        "s/epoch",
        "step × EW",
        "images/s",
        "memory",
    ]
    runs = {"ew": "3/3", "deepchest": "3/3", "pcgrad": "3/3", "mgda": "2/3 (1 diverged)", "graddrop": "2/3 (1 failed)"}
    for method in METHODS:
        row = table.loc[method]
        assert row["runs"] == runs[method]
        for header, metric in (
            ("AUROC", "auroc"),
            ("AP", "ap"),
            ("accuracy@0.5", "accuracy"),
            ("macro-F1", "macro_f1"),
            ("balanced acc.", "balanced_accuracy"),
            ("ECE", "ece"),
        ):
            assert row[header] == shown(method, metric, 3), (method, header)
        assert row["test loss"] == f"{frame.loc[(method, 'test_loss'), 'value']:.4f}"
        assert row["s/epoch"] == f"{frame.loc[(method, 's_per_epoch'), 'value']:.2f}"
        assert row["images/s"] == f"{frame.loc[(method, 'images_per_s'), 'value']:.0f}"
        assert row["memory"] == f"{frame.loc[(method, 'peak_rss_mb'), 'value']:.0f} RSS"
        if method == "ew":
            relative = ("Δm% vs EW", "ΔAUROC vs EW", "ΔAUROC vs EW (seeds)", "step × EW")
            assert [row[c] for c in relative] == ["—"] * 4
            continue
        assert row["Δm% vs EW"] == shown(method, "delta_m_pct", 2, True, "p_holm")
        assert row["ΔAUROC vs EW"] == shown(method, "delta_auroc", 3, True, "p_holm")
        assert row["ΔAUROC vs EW (seeds)"] == shown(method, "delta_auroc_seeds", 3, True, "p")
        assert row["step × EW"] == shown(method, "step_ratio", 2)
    assert table.loc["graddrop", "ΔAUROC vs EW (seeds)"] == "+0.000 [+0.000, +0.000]"  # no spread: no p shown


def test_notes_name_the_left_out_tasks_and_the_resampling(report) -> None:
    _, record, out = report
    md = (out / "report.md").read_text()
    assert (f"- Means leave out 4 task(s) with fewer than 20 test positives (--min-positives): {LEFT_OUT}.\n") in md
    assert (
        f"- Intervals: {RESAMPLES} bootstrap resamples of the {record.spec.test_patients} test patients and the "
        "3 seeds jointly. Holm adjustment over this protocol's methods, per column.\n"
    ) in md
    ew = _frame(out).set_index(["variant", "metric"]).loc[("ew", "auroc")]
    assert (
        f"- Noise floor: EW's own mean AUROC is uncertain by ±{(ew['hi'] - ew['lo']) / 2:.3f} (95% interval "
        f"half-width), sd over seeds {ew['sd']:.3f};"
    ) in md
    headers = list(_md_table(md, "Per-task test AUROC").columns)
    assert headers == [f"{t} ({n}{'' if n >= 20 else ' †'})" for t, n in TEST_POSITIVES.items()]


def test_a_variant_with_a_failed_seed_says_which_seeds_it_averages(report) -> None:
    """mgda's seed 2 diverged and graddrop's failed: their columns average seeds 0 and 1, their Δ the same seeds of EW."""
    _, _, out = report
    md = " ".join((out / "report.md").read_text().split())
    for method in ("mgda", "graddrop"):
        assert (
            f"- {method}: its columns average seed(s) 0, 1, its complete runs of the protocol's 0, 1, 2; its Δ "
            "columns and every test of significance involving it compare on the seeds both sides have (against "
            "EW: 2 seed(s))."
        ) in md
    assert "- pcgrad: its columns" not in md


def test_runs_that_did_not_complete_are_listed(report) -> None:
    _, _, out = report
    md = (out / "report.md").read_text()
    section = md.split("### Runs that did not complete\n\n", 1)[1].split("\n\n### ", 1)[0]
    assert section.startswith(
        "- mgda seed 2: diverged (non-finite loss)\n"
        "- graddrop seed 2: failed (RuntimeError: cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"
    )


def test_a_failed_runs_traceback_stays_out_of_the_report(report) -> None:
    _, _, out = report
    assert "Traceback" not in (out / "report.md").read_text()


def test_the_paper_check_states_the_frames_numbers(report) -> None:
    _, record, out = report
    frame = _frame(out).set_index(["variant", "metric"])
    md = (out / "report.md").read_text()
    value = lambda v, m: frame.loc[(v, m), "value"]  # noqa: E731
    # pcgrad's validation and test accuracy are 1 by construction: the best other method on validation
    assert (
        f"DeepChest's test accuracy at 0.5 is {100 * value('deepchest', 'accuracy'):.2f}% and that of the best "
        f"other method on validation, pcgrad (validation accuracy 100.00%), is 100.00%: a difference of "
        f"{100 * (value('deepchest', 'accuracy') - 1):+.2f} percentage points, 95% interval ["
    ) in md
    assert "] over test patients (3 paired seeds), p = " in md
    assert f"On mean AUROC the difference is {value('deepchest', 'auroc') - 1:+.3f} [" in md
    dc = pd.Series([record.costs[("deepchest", s)]["train_s"] / 3 for s in (0, 1, 2)])
    ratios = []
    for method in ("pcgrad", "mgda", "graddrop"):
        theirs = pd.Series([record.costs[(method, s)]["train_s"] / 3 for s in record.complete(method)])
        ratios.append(
            f"{method} {theirs.mean() / dc.mean():.2f}× (range over seeds "
            f"{theirs.min() / dc.max():.2f}–{theirs.max() / dc.min():.2f})"
        )
    assert (
        f"DeepChest takes {dc.mean():.2f} s per epoch; each gradient-based method takes, relative to it: "
        f"{'; '.join(ratios)}."
    ) in md
    peak = value("deepchest", "peak_rss_mb")
    assert peak == 905 + 20  # PEAK_MB + 10 per seed, the largest over seeds 0–2
    relative = "; ".join(f"{m} {value(m, 'peak_rss_mb') / peak:.2f}×" for m in ("pcgrad", "mgda", "graddrop"))
    assert (
        f"DeepChest's peak is 925 MiB RSS (peak process RSS on a CPU, which includes the data and the Python "
        f"process); gradient-based methods relative to it: {relative}."
    ) in md


def test_the_paper_checks_accuracy_interval_is_about_its_difference(report) -> None:
    """The interval printed is the patient-and-seed bootstrap of DeepChest − pcgrad's accuracy, around the point
    difference: the same numbers `leaderboard.difference` gives on the report's resamples."""
    from mtlbench.report.leaderboard import difference, leaderboard, shared_seeds
    from mtlbench.report.load import load_protocols

    path, _, out = report
    md = (out / "report.md").read_text()
    point, low, high = map(
        float,
        re.search(
            r"a difference of ([-+0-9.]+) percentage points, 95% interval \[([-+0-9.]+), ([-+0-9.]+)\]", md
        ).groups(),
    )
    assert low <= point <= high and low < high
    (protocol, *_) = load_protocols(path)
    board = leaderboard(protocol, resamples=RESAMPLES)
    dc, pc = board.metrics["deepchest"], board.metrics["pcgrad"]
    d = difference(dc, pc, "accuracy", shared_seeds(dc, pc))
    assert (point, low, high) == pytest.approx((100 * d.mean, 100 * d.low, 100 * d.high), abs=0.006)


def test_figures_are_real_images(report) -> None:
    _, _, out = report
    for png in out.glob("figures/*/*.png"):
        svg = png.with_suffix(".svg").read_text()
        width, height = (float(x) for x in re.search(r'width="([0-9.]+)pt" height="([0-9.]+)pt"', svg).groups())
        image = np.asarray(Image.open(png).convert("RGB"))
        # the PNG is the SVG's figure at 130 dpi (points are 1/72 inch)
        assert image.shape[:2] == (int(height / 72 * 130 + 1e-6), int(width / 72 * 130 + 1e-6)), png
        rgb = image.astype(np.int32)
        colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
        assert len(colours) > 20, f"{png} is nearly blank"


def test_the_legend_states_the_resamples_used(report) -> None:
    _, _, out = report  # rendered with --resamples 200
    for page in ("report.md", "report.html"):
        text = (out / page).read_text()
        assert "mean-AUROC difference vs EW, paired by patient and seed (200 resamples)" in text
        assert f"Intervals: {RESAMPLES} bootstrap resamples of the " in text
        assert "1,000 resamples" not in text


# --------------------------------------------------------------------------- options and other databases


def test_failed_runs_are_listed_and_other_protocols_not_merged(results_db, tmp_path: Path) -> None:
    """An out-of-memory pcgrad run joins the protocol; a CUDA protocol of three methods stays apart, with its
    CUDA peaks."""
    path, _ = results_db
    db = tmp_path / "r.sqlite"
    shutil.copyfile(path, db)
    oom = "out of memory after reaching 1234 MiB CUDA: CUDA out of memory. Tried to allocate 2.00 GiB"
    with ResultsStore(db) as store:
        write_protocol(
            store, ProtocolSpec(methods=("pcgrad",), seeds=(7,), failures={("pcgrad", 7): Failure("oom", oom)})
        )
        cuda = write_protocol(
            store, ProtocolSpec(methods=("ew", "deepchest", "pcgrad"), seeds=(0,), device="cuda", failures={})
        )
    out = tmp_path / "out"
    assert main(["report", "--results", str(db), "--out", str(out), "--quiet", "--resamples", "100"]) == 0
    md = (out / "report.md").read_text()
    assert "19 finished run(s) in 2 protocol(s)" in md and md.count("### Leaderboard") == 2
    assert md.index("key ") < md.index("device=cpu") < md.index("device=cuda")  # the larger protocol first
    assert f"- pcgrad seed 7: oom ({oom})" in md
    cpu_md, cuda_md = md.split("## Protocol 2: ")
    assert _md_table(cpu_md, "Leaderboard").loc["pcgrad", "runs"] == "3/4 (1 oom)"
    frames = {p.name.split("-")[-1][:-4]: pd.read_csv(p) for p in (out / "tables").glob("leaderboard_*.csv")}
    assert len(frames) == 2
    gpu = next(f for f in frames.values() if len(set(f["variant"])) == 3).set_index(["variant", "metric"])
    for method in ("ew", "deepchest", "pcgrad"):
        assert gpu.loc[(method, "peak_cuda_mb"), "value"] == cuda.costs[(method, 0)]["peak_cuda_mb"]
        assert (method, "peak_rss_mb") not in gpu.index  # one kind of peak per column, CUDA preferred
        assert (
            _md_table(cuda_md, "Leaderboard").loc[method, "memory"]
            == f"{cuda.costs[(method, 0)]['peak_cuda_mb']:.0f} CUDA"
        )
    dc, pc = (cuda.costs[(m, 0)]["peak_cuda_mb"] for m in ("deepchest", "pcgrad"))
    assert (
        f"DeepChest's peak is {dc:.0f} MiB CUDA; gradient-based methods relative to it: pcgrad {pc / dc:.2f}×."
        in cuda_md
    )
    assert "(one seed: the intervals show test-set sampling only; variation over seeds is not measured)" in cuda_md


def test_report_never_trains_and_its_own_old_report_is_replaced_whole(report, tmp_path: Path) -> None:
    path, _, first = report
    out = tmp_path / "out"
    shutil.copytree(first, out)  # an earlier report, with its marker listing what it wrote
    marker = json.loads((out / ".mtlbench-report").read_text())
    assert {"report.md", "report.html", "tables", "figures"} <= set(marker["entries"])
    (out / "stale.txt").write_text("from an older report")  # a file an older report wrote, this one does not
    (out / ".mtlbench-report").write_text(json.dumps({**marker, "entries": [*marker["entries"], "stale.txt"]}))
    before = path.read_bytes()
    assert main(report_args(path, out) + "--methods ew,deepchest".split()) == 0
    assert path.read_bytes() == before
    assert not (out / "stale.txt").exists()
    assert list(dict.fromkeys(_frame(out)["variant"])) == ["ew", "deepchest"]
    assert "6 finished run(s) in 1 protocol(s)" in (out / "report.md").read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no scratch or replaced folder left


def test_report_refuses_a_users_folder_and_the_folder_of_its_database(results_db, tmp_path: Path, capsys) -> None:
    path, _ = results_db
    mydocs = tmp_path / "mydocs"
    mydocs.mkdir()
    (mydocs / "thesis.txt").write_text("chapter 1")
    res = tmp_path / "res"
    res.mkdir()
    db = res / "r.sqlite"
    shutil.copyfile(path, db)
    for results, out, message in (
        (path, mydocs, "was not written by `mtlbench report`"),
        (db, res, "which this command reads"),
    ):
        capsys.readouterr()
        code = main(["report", "--results", str(results), "--out", str(out), "--quiet", "--resamples", "100"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("mtlbench: error: ") and err.count("\n") == 1 and message in err, err
    assert (mydocs / "thesis.txt").read_text() == "chapter 1" and [p.name for p in mydocs.iterdir()] == ["thesis.txt"]
    assert db.read_bytes() == path.read_bytes() and [p.name for p in res.iterdir()] == ["r.sqlite"]


@pytest.mark.parametrize(
    "setup, message",
    [
        ("absent", "no results database at"),
        ("empty", "holds no finished runs"),
        ("garbage", "is not a usable mtlbench results database"),
    ],
)
def test_bad_databases_are_one_line_errors(tmp_path: Path, capsys, setup: str, message: str) -> None:
    db = tmp_path / "r.sqlite"
    if setup == "empty":
        ResultsStore(db).close()
    elif setup == "garbage":
        db.write_text("not sqlite at all" * 100)
    code = main(["report", "--results", str(db), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("resamples", ["5", "99", "10001", "1000000000"])
def test_resamples_out_of_range_is_one_line_saying_the_range(tmp_path: Path, capsys, resamples: str) -> None:
    code = main(
        [
            "report",
            "--results",
            str(tmp_path / "r.sqlite"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--resamples",
            resamples,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("mtlbench: error: ")
    assert f"--resamples must be between 100 and 10,000, got {int(resamples):,}" in err
    assert not (tmp_path / "out").exists()


HOLDS = "it holds finished runs of ew (3), deepchest (3), pcgrad (3), mgda (3), graddrop (3) on cxr14-synth"


@pytest.mark.parametrize(
    "options, wanted",
    [
        (["--methods", "deepchets"], "holds no finished runs of method(s) 'deepchets'"),
        (["--methods", "ew,nosuch,pcgrad"], "holds no finished runs of method(s) 'nosuch'"),
        (["--dataset", "nih-cxr14"], "holds no finished runs on dataset 'nih-cxr14'"),
        (
            ["--dataset", "nih-cxr14", "--methods", "ew"],
            "holds no finished runs of method(s) 'ew' on dataset 'nih-cxr14'",
        ),
        (["--reference", "cagrad"], "holds no finished runs of the reference method 'cagrad' (--reference);"),
        (
            ["--reference", "cagrad", "--methods", "ew"],
            "holds no finished runs of the reference method 'cagrad' (--reference);",
        ),
        (
            ["--methods", "nosuch", "--reference", "EW"],
            "holds no finished runs of method(s) 'nosuch' or of the reference method 'EW' (--reference);",
        ),
    ],
)
def test_methods_or_dataset_matching_nothing_lists_what_the_database_holds(
    results_db, tmp_path: Path, capsys, options: list[str], wanted: str
) -> None:
    path, _ = results_db
    capsys.readouterr()
    code = main(["report", "--results", str(path), "--out", str(tmp_path / "out"), "--quiet", *options])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("mtlbench: error: "), err
    assert f"{path} {wanted}" in err and err.endswith(f"; {HOLDS}\n"), err
    assert not (tmp_path / "out").exists()


def test_reference_option_compares_against_another_method(report, expected, tmp_path: Path) -> None:
    path, record, _ = report
    out = tmp_path / "out"
    assert main(report_args(path, out) + "--reference deepchest --methods pcgrad".split()) == 0
    frame = _frame(out)
    assert list(dict.fromkeys(frame["variant"])) == ["deepchest", "pcgrad"]  # the reference's runs always load
    assert set(frame["reference"].dropna()) == {"deepchest"}
    assert set(frame.loc[frame["variant"] == "deepchest", "metric"]).isdisjoint(RELATIVE)  # nothing against itself
    frame = frame.set_index(["variant", "metric"])
    seeds = [0, 1, 2]
    mine, ref = (_seed_means(expected, m, "auroc", seeds) for m in ("pcgrad", "deepchest"))
    t = stats.ttest_rel(mine, ref)
    row = frame.loc[("pcgrad", "delta_auroc_seeds")]
    assert (row["value"], row["p"]) == pytest.approx(((mine - ref).mean(), t.pvalue), rel=1e-9)
    assert tuple(frame.loc[("pcgrad", "step_ratio"), ["value", "lo", "hi"]]) == pytest.approx(
        _step_ratio(record, "pcgrad", "deepchest"), rel=1e-9
    )
    assert frame.loc[("pcgrad", "delta_m_pct"), "value"] == pytest.approx(
        _delta_m(expected, "pcgrad", "deepchest", seeds), rel=1e-9
    )
    md = (out / "report.md").read_text()
    assert "| Δm% vs deepchest | ΔAUROC vs deepchest | ΔAUROC vs deepchest (seeds) |" in md
    assert "Per-task change in test loss against deepchest" in md and "EW" not in md


def test_variants_are_labelled_by_the_stored_settings_not_todays_defaults() -> None:
    """Runs of one method that differ in a resolved hyperparameter or in the method's version are
    separate variants, labelled by what differs among them; one setting alone is the plain name."""
    from mtlbench.report.load import variant_names

    configs = [
        {"method": "cagrad", "method_params": {"c": 0.4, "rescale": "1+c^2"}, "method_version": 1},
        {"method": "cagrad", "method_params": {"c": 0.5, "rescale": "1+c^2"}, "method_version": 1},
        {"method": "ew", "method_params": {}, "method_version": 1},
        {"method": "mgda", "method_params": {"normalization": "l2"}, "method_version": 1},  # not the default
        {"method": "dwa", "method_params": {"temperature": 2.0}, "method_version": 1},
        {"method": "dwa", "method_params": {"temperature": 2.0}, "method_version": 2},
    ]
    assert variant_names(configs) == ["cagrad[c=0.4]", "cagrad[c=0.5]", "ew", "mgda", "dwa[v1]", "dwa[v2]"]


# --------------------------------------------------------------------------- a real sweep, end to end


@pytest.mark.slow  # a real sweep: `python -m pytest -m slow`
def test_the_report_of_a_real_sweep_matches_what_it_stored(tmp_path: Path) -> None:
    """The trainer's database, not the fixture's: the report renders and its numbers are the stored ones."""
    methods = ("ew", "deepchest", "graddrop")  # graddrop: a method without weights
    results = tmp_path / "r.sqlite"
    assert main(smoke_sweep(",".join(methods), results, tmp_path / "data", extra=["--seeds", "0,1"])) == 0
    out = tmp_path / "out"
    assert main(report_args(results, out, min_positives=1)) == 0
    md = (out / "report.md").read_text()
    assert "6 finished run(s) in 1 protocol(s)" in md and md.count("![") == len(FIGURES)
    assert list(_md_table(md, "Leaderboard").index) == list(methods)
    frame = _frame(out).set_index(["variant", "metric"])
    with ResultsStore(tmp_path / "r.sqlite") as store:
        runs = {(r["method"], r["seed"]): r["run_id"] for r in store.query("SELECT method, seed, run_id FROM runs")}
        predictions = {key: store.predictions(rid, "test") for key, rid in runs.items()}
        costs = {key: dict(store.query("SELECT * FROM costs WHERE run_id=?", (rid,))[0]) for key, rid in runs.items()}
    labels = next(iter(predictions.values()))[1]
    eligible = (labels.sum(axis=0) >= 1) & (labels.sum(axis=0) < len(labels))
    assert eligible.any()
    for method in methods:
        per_seed = [
            np.mean([roc_auc_score(labels[:, t], predictions[(method, s)][2][:, t]) for t in np.flatnonzero(eligible)])
            for s in (0, 1)
        ]
        assert frame.loc[(method, "auroc"), "value"] == pytest.approx(np.mean(per_seed), rel=1e-9)
        assert frame.loc[(method, "runs_complete"), "value"] == 2
        assert frame.loc[(method, "peak_rss_mb"), "value"] == max(costs[(method, s)]["peak_rss_mb"] for s in (0, 1))
        # time per epoch over the runs not timed on a loaded machine (the stored flag decides; on a busy
        # machine every run may be left out, and then the metric is absent)
        timed = [costs[(method, s)]["train_s"] / 2 for s in (0, 1) if not costs[(method, s)]["unreliable"]]
        if timed:
            assert frame.loc[(method, "s_per_epoch"), "value"] == pytest.approx(np.mean(timed), rel=1e-12)
        else:
            assert (method, "s_per_epoch") not in frame.index
