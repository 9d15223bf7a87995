"""How NIH's text-mined labels agree with what the image shows, per finding: the label noise that
cxr14-synth renders (see noise.py), and `measure_agreement`, which recomputes its measured part.

For a finding, PPV = P(the image shows it | NIH labels it) and sensitivity = P(NIH labels it | the
image shows it). Where the Google 2019 expert re-reading of 4,376 NIH images covers a finding
(Majkowska et al., "Chest radiograph interpretation with deep learning models: assessment with
radiologist-adjudicated reference standards and population-adjusted evaluation", Radiology 2020;
the table `google2019_nih-chest-xray-labels.csv.gz` ships in torchxrayvision's data folder), both
are measured against it. The expert reading has only four labels, so NIH findings are compared in
groups:

    Pneumothorax                            vs  Pneumothorax
    Nodule, Mass                            vs  Nodule or mass
    Consolidation, Infiltration, Pneumonia  vs  Airspace opacity  (the grouping is this module's choice:
                                                the NIH labels that name airspace disease)

PPV is per NIH label (P(expert group finding | this NIH label)); sensitivity is the group's
(P(any NIH label of the group | expert finding)). The expert images are not a uniform sample of
NIH (1,962 of them come from the official test split, which has twice NIH's pneumothorax rate), so
sensitivity is not read off the expert images directly: it is P(expert | NIH label) and
P(expert | no NIH label of the group), both unbiased under sampling that depends on NIH's labels,
put together at the whole NIH table's label rate (Bayes). Fracture, the fourth expert label, is
not an NIH finding.

The other eight findings have no expert reference in these tables: their PPV and sensitivity are
a documented choice (`CHOSEN`), not a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pandas as pd

from mtlbench.tasks import TASK_NAMES

EXPERT_FILE = "google2019_nih-chest-xray-labels.csv.gz"
SOURCE_MEASURED = "measured: NIH labels vs Google 2019 expert labels ({column})"
SOURCE_CHOSEN = "choice: no expert reference in the shipped tables"

EXPERT_GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Pneumothorax": ("Pneumothorax",),
        "Nodule or mass": ("Nodule", "Mass"),
        "Airspace opacity": ("Consolidation", "Infiltration", "Pneumonia"),
    }
)
"""Expert label (column of EXPERT_FILE) → the NIH findings compared with it."""


@dataclass(frozen=True)
class Agreement:
    """How one NIH finding label agrees with the image: PPV and sensitivity, and where they come from."""

    ppv: float
    sensitivity: float
    source: str


# For findings the expert reading does not cover. Not measured. PPV 0.80 is about the best measured
# PPV (consolidation 0.83, pneumonia 0.78): the findings left (cardiomegaly, effusion, emphysema,
# hernia, ...) are mostly large or diffuse, no harder to report than an airspace opacity. The
# measured sensitivities (0.35-0.42) are not carried over: they are low partly because the expert
# labels are broader than NIH's (any airspace opacity, any nodule), and with 0.4 the common findings
# would gain a spurious signature in 15% of the other images. 0.80 keeps the spurious rate of each
# at a few percent of images, like the measured pneumothorax (3%) and consolidation (7%).
CHOSEN = Agreement(ppv=0.80, sensitivity=0.80, source=SOURCE_CHOSEN)

# `python benchmarks/synth_label_noise.py` recomputes the measured rows from the two tables
# torchxrayvision ships (Data_Entry_2017_v2020.csv.gz, google2019_nih-chest-xray-labels.csv.gz);
# tests/test_synth_label_noise.py checks that these constants are its output, rounded to 3 places.
LABEL_AGREEMENT: Mapping[str, Agreement] = MappingProxyType(
    {
        "Atelectasis": CHOSEN,
        "Cardiomegaly": CHOSEN,
        "Effusion": CHOSEN,
        "Infiltration": Agreement(0.751, 0.345, SOURCE_MEASURED.format(column="Airspace opacity")),
        "Mass": Agreement(0.582, 0.412, SOURCE_MEASURED.format(column="Nodule or mass")),
        "Nodule": Agreement(0.582, 0.412, SOURCE_MEASURED.format(column="Nodule or mass")),
        "Pneumonia": Agreement(0.776, 0.345, SOURCE_MEASURED.format(column="Airspace opacity")),
        "Pneumothorax": Agreement(0.458, 0.422, SOURCE_MEASURED.format(column="Pneumothorax")),
        "Consolidation": Agreement(0.834, 0.345, SOURCE_MEASURED.format(column="Airspace opacity")),
        "Edema": CHOSEN,
        "Emphysema": CHOSEN,
        "Fibrosis": CHOSEN,
        "Pleural_Thickening": CHOSEN,
        "Hernia": CHOSEN,
    }
)
"""PPV and sensitivity of NIH's label per finding, with its source (see the module docstring)."""


def nih_label_matrix(finding_labels: pd.Series) -> pd.DataFrame:
    """Booleans per task from NIH's "Finding Labels" column ("Mass|Nodule", "No Finding", ...)."""
    parts = finding_labels.astype(str).str.split("|")
    return pd.DataFrame({task: parts.map(lambda labels, t=task: t in labels).to_numpy() for task in TASK_NAMES})


def measure_agreement(table: pd.DataFrame, expert: pd.DataFrame) -> pd.DataFrame:
    """Per NIH finding the expert reading covers: PPV, sensitivity (at the full table's label rate)
    and the expert images' own sensitivity (biased by their sampling; shown for comparison).

    `table` is NIH's metadata table, `expert` the Google 2019 table (joined on Image Index; NIH's
    labels are taken from `table`). Columns: expert, n_labelled, ppv, sensitivity,
    sensitivity_expert_images, one row per finding.
    """
    joined = expert.merge(table[["Image Index", "Finding Labels"]], on="Image Index", suffixes=("_expert", ""))
    nih = nih_label_matrix(joined["Finding Labels"])
    full = nih_label_matrix(table["Finding Labels"])
    rows = []
    for column, findings in EXPERT_GROUPS.items():
        shows = (joined[column].astype(str).str.upper() == "YES").to_numpy()
        in_group = nih[list(findings)].any(axis=1).to_numpy()
        group_ppv = shows[in_group].mean()
        missed = shows[~in_group].mean()  # P(expert | no NIH label of the group)
        rate = full[list(findings)].any(axis=1).mean()
        sensitivity = group_ppv * rate / (group_ppv * rate + missed * (1 - rate))
        for finding in findings:
            labelled = nih[finding].to_numpy()
            rows.append(
                {
                    "finding": finding,
                    "expert": column,
                    "n_labelled": int(labelled.sum()),
                    "ppv": float(shows[labelled].mean()),
                    "sensitivity": float(sensitivity),
                    "sensitivity_expert_images": float(in_group[shows].mean()),
                }
            )
    return pd.DataFrame(rows).set_index("finding")


def noise_rates(agreement: Mapping[str, Agreement], prevalence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drop, spurious) per task: the chance that a labelled finding is not drawn (1 − PPV), and the
    chance that an unlabelled one is, chosen so that NIH's label has the finding's sensitivity.

    Of N images, N p are labelled and N p PPV of them drawn; sensitivity s means those are s of the
    images that show it, so N p PPV (1 − s) / s unlabelled images (of N (1 − p)) show it too.
    `prevalence` is NIH's label rate per task (the full table's, so rates do not depend on a sample).
    """
    ppv = np.array([agreement[t].ppv for t in TASK_NAMES])
    sens = np.array([agreement[t].sensitivity for t in TASK_NAMES])
    p = np.asarray(prevalence, dtype=np.float64)
    spurious = p * ppv * (1 - sens) / (sens * np.maximum(1 - p, 1e-12))
    return 1 - ppv, np.clip(spurious, 0.0, 1.0)
