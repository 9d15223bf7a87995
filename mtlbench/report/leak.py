"""The patient leak, measured: runs of `--split random-image` against the same methods' runs on the
dataset's patient-wise split, scored on the same test images.

A random-image protocol is paired with the protocol whose settings are the same but for the split
(and that holds no `split` field, or "official"). Both are scored on the random-image runs' test
images — a subset of the patient-wise test split (mtlbench/image_split.py), so the patient-wise
runs' stored predictions cover them — on the seeds both have, with one bootstrap design (test
patients and seeds resampled together), so every difference is paired resample by resample.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mtlbench.report.leaderboard import difference, shared_seeds, test_metrics
from mtlbench.report.load import Protocol
from mtlbench.report.resampled import VariantMetrics
from mtlbench.report.stats import Difference, bootstrap_difference, holm

RANDOM_IMAGE = "random-image"
OFFICIAL = "official"


@dataclass(frozen=True)
class LeakComparison:
    """One random-image protocol against its patient-wise twin, restricted to the same test images."""

    leaky: Protocol
    official: Protocol
    metrics: dict[str, tuple[VariantMetrics, VariantMetrics]]  # variant → (random-image, patient-wise)
    tasks: tuple[str, ...]

    def variants(self) -> list[str]:
        """Variants with runs in both protocols, in the random-image protocol's order."""
        return [v for v in self.leaky.variants() if v in self.metrics]

    def mean_difference(self, variant: str, metric: str = "auroc") -> Difference:
        """Random-image − patient-wise of the metric's mean over the eligible tasks, on the shared seeds."""
        leaky, fair = self.metrics[variant]
        return difference(leaky, fair, metric, shared_seeds(leaky, fair))

    def task_differences(self, variant: str, metric: str = "auroc") -> list[Difference]:
        """Per task, random-image − patient-wise, with Holm-adjusted p over the tasks (in `p`)."""
        leaky, fair = self.metrics[variant]
        seeds = shared_seeds(leaky, fair)
        oa, ra = leaky.per_task(metric, seeds)
        ob, rb = fair.per_task(metric, seeds)
        raw = [bootstrap_difference(oa[t] - ob[t], ra[:, t] - rb[:, t]) for t in range(len(self.tasks))]
        adjusted = holm(np.array([d.p for d in raw]))
        return [replace(d, p=float(p)) for d, p in zip(raw, adjusted)]

    def mean_value(self, variant: str, which: int, metric: str = "auroc") -> float:
        """The metric's observed mean over eligible tasks: `which` 0 = random-image, 1 = patient-wise."""
        both = self.metrics[variant]
        seeds = shared_seeds(*both)
        return both[which].statistic(metric, seeds)[0]


def leak_comparisons(protocols: list[Protocol], resamples: int, min_positives: int) -> list[LeakComparison]:
    """A comparison per random-image protocol that has a patient-wise twin with runs of the same variants."""
    out = []
    for leaky in protocols:
        if leaky.config.get("split") != RANDOM_IMAGE:
            continue
        twin = next((p for p in protocols if _is_twin(leaky.config, p.config)), None)
        if twin is None:
            continue
        compared = _on_shared_images_and_seeds(leaky, twin)
        if compared is None:
            continue
        leaky_on, twin_on = compared
        mine, theirs = (test_metrics(p, resamples, min_positives) for p in (leaky_on, twin_on))
        pairs = {v: (mine[v], theirs[v]) for v in mine if v in theirs and shared_seeds(mine[v], theirs[v])}
        if pairs:
            out.append(LeakComparison(leaky_on, twin_on, pairs, tuple(leaky.tasks())))
    return out


def _is_twin(leaky: dict, other: dict) -> bool:
    """Whether `other` is `leaky`'s settings on the dataset's own split."""
    if other.get("split", OFFICIAL) != OFFICIAL:
        return False
    strip = {"split"}
    return {k: v for k, v in leaky.items() if k not in strip} == {k: v for k, v in other.items() if k not in strip}


def _on_shared_images_and_seeds(leaky: Protocol, official: Protocol) -> tuple[Protocol, Protocol] | None:
    """Both protocols cut to the random-image test images (in one order) and to the seeds both ran; None
    when the patient-wise runs were not scored on those images."""
    seeds = set(leaky.complete()["seed"]) & set(official.complete()["seed"])
    images = _test_images(leaky)
    if not seeds or not images:
        return None
    cut = [_restricted(p, images, seeds) for p in (leaky, official)]
    if not any(split == "test" for _, split in cut[1].predictions):
        return None
    return cut[0], cut[1]


def _test_images(protocol: Protocol) -> list[str]:
    """The test image ids of the protocol's first run with test predictions, sorted."""
    for (_, split), (ids, _, _) in sorted(protocol.predictions.items()):
        if split == "test":
            return sorted(ids)
    return []


def _restricted(protocol: Protocol, images: list[str], seeds: set[int]) -> Protocol:
    """`protocol` with only the runs of `seeds`, their test predictions on `images` (in that order); a run
    whose test predictions miss one of the images is left out."""
    runs = protocol.runs[protocol.runs["seed"].isin(seeds)]
    kept = set(runs["run_id"])
    predictions, patients = {}, {}
    for (run_id, split), (ids, labels, probs) in protocol.predictions.items():
        if run_id not in kept:
            continue
        rows = list(range(len(ids)))
        if split == "test":
            position = {image: k for k, image in enumerate(ids)}
            if any(image not in position for image in images):
                continue
            rows = [position[image] for image in images]
        predictions[(run_id, split)] = ([ids[k] for k in rows], labels[rows], probs[rows])
        if (run_id, split) in protocol.patients:
            stored = protocol.patients[(run_id, split)]
            patients[(run_id, split)] = [stored[k] for k in rows]
    scored = {run_id for run_id, split in predictions if split == "test"}
    runs = runs[runs["run_id"].isin(scored) | (runs["status"] != "complete")]
    return replace(protocol, runs=runs.reset_index(drop=True), predictions=predictions, patients=patients)


def leak_table(comparison: LeakComparison) -> pd.DataFrame:
    """Per variant: mean AUROC on the shared test images under each split and the difference."""
    rows = []
    for v in comparison.variants():
        d = comparison.mean_difference(v)
        rows.append(
            {
                "variant": v,
                "seeds": len(shared_seeds(*comparison.metrics[v])),
                "AUROC, patient-wise split": f"{comparison.mean_value(v, 1):.3f}",
                "AUROC, random-image split": f"{comparison.mean_value(v, 0):.3f}",
                "Δ (leak)": f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]",
                "p": f"{d.p:.2g}",
            }
        )
    return pd.DataFrame(rows)


def leak_task_table(comparison: LeakComparison) -> pd.DataFrame:
    """Per task (rows) and variant (columns): Δ AUROC random-image − patient-wise [95% interval], * where the
    Holm-adjusted p over the tasks is below 0.05; tasks left out of the means (too few test positives) marked †,
    — where a task's AUROC is undefined (one class among the test images)."""
    first = next(iter(comparison.metrics.values()))[0]
    table = pd.DataFrame({"task": [t + ("" if ok else " †") for t, ok in zip(comparison.tasks, first.eligible)]})
    for v in comparison.variants():
        table[v] = [
            f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" + ("*" if d.p < 0.05 else "") if np.isfinite(d.mean) else "—"
            for d in comparison.task_differences(v)
        ]
    return table


def leak_summary(comparison: LeakComparison) -> str:
    """What was compared, and how much of the test split leaks, in one paragraph."""
    info = comparison.leaky.split_info
    fraction = info.get("leaked_test_fraction")
    share = (
        f"{100 * fraction:.1f}% of them have a patient with images in the random-image training split"
        if isinstance(fraction, (int, float))
        else "the share of them whose patient has images in training was not stored"
    )
    return (
        f"Protocol {comparison.leaky.key} (`--split random-image`, leaky by design) against protocol "
        f"{comparison.official.key} (the same settings on the dataset's patient-wise split), both scored on the "
        f"random-image runs' {info.get('test_images', '?')} test images (of the patient-wise split's "
        f"{info.get('patient_split_test_images', '?')}): {share}. Both train on the same number of images. "
        "Differences are random-image − patient-wise, seed means with 95% intervals over test patients and "
        "seeds (one bootstrap design for both); a positive difference is what the leak adds to the test score."
    )
