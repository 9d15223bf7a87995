"""The generator's constants, and the parameters that determine a generated dataset (synth.json)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from mtlbench.datasets.cxr14_synth import latent
from mtlbench.datasets.cxr14_synth import shortcuts as shortcut
from mtlbench.datasets.cxr14_synth.agreement import LABEL_AGREEMENT
from mtlbench.datasets.nih_tables import TABLE_FILE

DATASET_NAME = "cxr14-synth"
GENERATOR_VERSION = 5  # 2: strengths ×1.6 (capped at 1) so the quick preset at 32 px learns;
# 3: float32 rendering throughout (pixels within ±1 of version 2, same anatomy and findings);
# 4: `count` train/val images and `test_count` test images, each drawn from its own share of the
# NIH patients (see nih_sample.sample_split); an image's pixels are those of version 3;
# 5: per-finding label noise from NIH's agreement with expert labels (agreement.py), a shared latent
# severity of the cardiac and airspace findings (latent.py), strengths calibrated to real NIH's
# per-class difficulty (calibration.py), optional shortcut confounders (shortcuts.py)
MIN_IMAGES = 50  # of train/val, and of test
MIN_SIZE, MAX_SIZE = 16, 1024
TEST_PATIENT_FRACTION = 0.2  # of the NIH table's patients: the ones test images are drawn from
# The flat label noise of the datasets that reuse the renderer on other tables (chexpert-synth,
# padchest-synth; see noise.py). cxr14-synth's own noise is per finding (agreement.py).
SIGNATURE_DROP_RATE = 0.05
SPURIOUS_RATE = 0.05

FINDING_STRENGTH: Mapping[str, float] = MappingProxyType(
    {
        "Atelectasis": 0.60,
        "Cardiomegaly": 1.00,
        "Effusion": 0.60,
        "Infiltration": 0.40,
        "Mass": 1.00,
        "Nodule": 1.00,
        "Pneumonia": 0.35,
        "Pneumothorax": 2.00,
        "Consolidation": 0.60,
        "Edema": 0.55,
        "Emphysema": 1.30,
        "Fibrosis": 1.30,
        "Pleural_Thickening": 1.10,
        "Hernia": 2.00,
    }
)
"""Signature strength per finding, 1.0 = textbook-obvious; the difficulty knob of the dataset.

Calibrated (version 2: version 1's values ×1.6, capped at 1) so that equal weighting in the
`quick` preset (32 px, 3 epochs, 2,000 images of which about 1,600 train/val, as
`synth_images=1600` gives now; sized so that all methods run in minutes on a
2-core CPU) lands clearly above chance, with the confusable opacities and small findings the
hardest; at 64 px and more epochs the easy findings approach, but do not reach, perfect AUROC.
"""


def generator_params(count: int, test_count: int, size: int, seed: int, shortcuts: bool = False) -> dict[str, Any]:
    """Everything that determines the generated files; stored as synth.json. `count` is the
    number of train/val images, `test_count` the number of test images, `shortcuts` whether shortcut
    confounders are drawn (`--synth-shortcuts`, with their rates)."""
    drawn = {
        "drain_rate": shortcut.DRAIN_RATE,
        "drain_background": shortcut.DRAIN_BACKGROUND,
        "portable": [shortcut.PORTABLE_BASE, shortcut.PORTABLE_PER_FINDING, shortcut.PORTABLE_MAX],
    }
    return {
        "generator": DATASET_NAME,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "count": count,
        "test_count": test_count,
        "image_size": size,
        "test_patient_fraction": TEST_PATIENT_FRACTION,
        "label_agreement": {task: [a.ppv, a.sensitivity] for task, a in LABEL_AGREEMENT.items()},
        "latent": {
            "groups": {group: list(findings) for group, findings in latent.LATENT_GROUPS.items()},
            "severity_range": list(latent.SEVERITY_RANGE),
            "congestion": latent.CONGESTION,
            "heart_trace": latent.HEART_TRACE,
        },
        "strength": dict(FINDING_STRENGTH),
        "shortcuts": drawn if shortcuts else False,
        "source_table": f"torchxrayvision/data/{TABLE_FILE}",
    }
