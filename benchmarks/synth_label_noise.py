"""Recompute cxr14-synth's measured label noise: NIH's labels against the Google 2019 expert labels.

    python benchmarks/synth_label_noise.py [--out FILE]

Reads the two tables torchxrayvision ships (Data_Entry_2017_v2020.csv.gz and
google2019_nih-chest-xray-labels.csv.gz) and prints one markdown row per NIH finding: its PPV and
sensitivity (measured where the expert reading covers it, see datasets/cxr14_synth/agreement.py;
else the documented choice), the expert images' own, sampling-biased sensitivity for comparison,
and the rates the renderer draws from them: the share of labelled findings left undrawn and of
unlabelled ones drawn. Seconds, no rendering.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mtlbench.datasets.cxr14_synth.agreement import EXPERT_FILE, LABEL_AGREEMENT, measure_agreement
from mtlbench.datasets.cxr14_synth.noise import nih_noise_rates, prevalence
from mtlbench.datasets.nih_layout import parse_finding_labels
from mtlbench.datasets.nih_tables import TABLE_FILE, nih_data_file, read_nih_table
from mtlbench.tasks import TASK_NAMES

HEADER = (
    "| finding | NIH label rate | PPV | sensitivity | sensitivity on the expert images | source "
    "| signature dropped | spurious signature |\n|---|---:|---:|---:|---:|---|---:|---:|"
)


def noise_table() -> str:
    """The markdown table of every finding's label agreement and the rates drawn from it."""
    table = read_nih_table(TABLE_FILE)
    measured = measure_agreement(table, pd.read_csv(nih_data_file(EXPERT_FILE)))
    rate = prevalence(parse_finding_labels(table["Finding Labels"], TABLE_FILE))
    drop, spurious = nih_noise_rates(rate)
    lines = [HEADER]
    for t, task in enumerate(TASK_NAMES):
        if task in measured.index:
            row = measured.loc[task]
            ppv, sens, biased = row["ppv"], row["sensitivity"], f"{row['sensitivity_expert_images']:.3f}"
            source = f"measured vs expert {row['expert']} (n = {row['n_labelled']} NIH-labelled)"
        else:
            agreement = LABEL_AGREEMENT[task]
            ppv, sens, biased, source = agreement.ppv, agreement.sensitivity, "–", "choice (no expert reference)"
        lines.append(
            f"| {task} | {rate[t]:.4f} | {ppv:.3f} | {sens:.3f} | {biased} | {source} "
            f"| {drop[t]:.1%} | {spurious[t]:.2%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    text = noise_table()
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
