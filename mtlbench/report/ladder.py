"""The report's DeepChest ladder: from the fair protocol to the authors' one, one factor a rung
(mtlbench/ladder.py), with DeepChest's and the best baseline's test accuracy and AUROC at each rung.

A ladder is found in the database from its rung 0 (a protocol none of whose settings is one of the
authors' choices): each later rung is the protocol whose settings are rung 0's plus the rungs'
changes so far. The rungs of the methods as published and as released share a protocol; their
variants are told apart by the released settings (`deepchest[init=authors]`, …).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mtlbench.config import LEGACY_VALUES
from mtlbench.ladder import RELEASED_PARAMS, RUNGS, Rung
from mtlbench.report.leaderboard import Leaderboard, difference, shared_seeds
from mtlbench.report.load import Protocol
from mtlbench.report.paper_check import DEEPCHEST, comparator

START = {"split": "official", "select": "best-val-auroc", "augment_eval": False, "method_optimizers": ""}
NOT_RUN = "not run"


def _settings(config: dict) -> dict:
    """A protocol's settings with the fields stored runs may lack at their legacy value."""
    return {**LEGACY_VALUES, **config}


def find_ladders(protocols: list[Protocol]) -> list[list[Protocol | None]]:
    """Per rung 0 in the database that has at least one later rung: the protocol of each rung (None: not run)."""
    by_settings = [(_settings(p.config), p) for p in protocols]
    ladders = []
    for start, protocol in by_settings:
        if any(start.get(k) != v for k, v in START.items()):
            continue
        rungs: list[Protocol | None] = []
        settings = dict(start)
        for rung in RUNGS:
            settings = {**settings, **rung.settings}
            rungs.append(next((p for s, p in by_settings if s == settings), None))
        if sum(p is not None for p in rungs) > 1 and rungs[0] is protocol:
            ladders.append(rungs)
    return ladders


def rung_variant(board: Leaderboard, method: str, rung: Rung) -> str | None:
    """The variant of `method` this rung compares: as released from the implementations rung on, else as published."""
    candidates = [v for v in board.variants() if v.split("[")[0] == method]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    marks = [f"{k}={v}" for k, v in RELEASED_PARAMS.get(method, {}).items()]
    chosen = [v for v in candidates if all(m in v for m in marks) == rung.released]
    return chosen[0] if len(chosen) == 1 else None


def ladder_table(rungs: list[Protocol | None], boards: dict[str, Leaderboard]) -> pd.DataFrame:
    """One row per rung: DeepChest's and the best baseline's (chosen on validation) test accuracy and AUROC,
    and DeepChest − baseline accuracy with its interval over test patients and seeds."""
    rows = []
    for index, (rung, protocol) in enumerate(zip(RUNGS, rungs)):
        row: dict[str, Any] = {"rung": f"{index}: {rung.name}", "protocol": protocol.key if protocol else NOT_RUN}
        board = boards.get(protocol.key) if protocol is not None else None
        rows.append({**row, **(_rung_numbers(board, rung) if board is not None else {})})
    return pd.DataFrame(rows).fillna("—")


def _rung_numbers(board: Leaderboard, rung: Rung) -> dict[str, str]:
    variants = {m: rung_variant(board, m, rung) for m in rung.methods()}
    values = board.values()
    mine = variants.get(DEEPCHEST)
    baselines = [v for m, v in variants.items() if m != DEEPCHEST and v is not None]
    best = comparator(board.per_run, baselines)
    out = {}
    for label, variant in (("DeepChest", mine), ("best baseline", best)):
        if variant is None or variant not in values.index:
            continue
        if label == "best baseline":
            out["best baseline (on validation)"] = variant
        out[f"{label} accuracy"] = _percent(values.loc[variant].get("accuracy"))
        out[f"{label} AUROC"] = _fixed(values.loc[variant].get("auroc"))
    a, b = board.metrics.get(mine or ""), board.metrics.get(best or "")
    seeds = shared_seeds(a, b) if a is not None and b is not None else []
    if seeds:
        d = difference(a, b, "accuracy", seeds)
        out["Δ accuracy (DeepChest − baseline)"] = f"{100 * d.mean:+.2f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}] pts"
    return out


def _percent(value: Any) -> str | float:
    return f"{100 * value:.2f}%" if isinstance(value, float) and np.isfinite(value) else np.nan


def _fixed(value: Any) -> str | float:
    return f"{value:.3f}" if isinstance(value, float) and np.isfinite(value) else np.nan


LADDER_EXPLANATION = (
    "From the fair protocol (rung 0: the settings of `--preset paper` or the ones given) to the DeepChest "
    "authors' released protocol, one of their choices added per rung (`mtlbench run --ladder`; mtlbench/ladder.py). "
    "Each rung trains EW, DeepChest and the authors' two baselines; the best baseline is chosen on validation "
    "accuracy, never on test. Accuracy is at threshold 0.5, as the paper reports it, a seed mean over tasks with "
    "enough test positives; the interval is over test patients and seeds. From rung 1 on, test images' patients "
    "may be in training (split by image)."
)
