"""The 14 NIH ChestX-ray14 pathologies, in the one task order every dataset maps to, and task subsets."""

from __future__ import annotations

from mtlbench.errors import UserError

TASK_NAMES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)


def task_subset(text: str) -> tuple[str, ...]:
    """The tasks a run trains on: "" = all 14; else a comma list of task names (a single-task baseline names
    one), returned in TASK_NAMES order; an unknown or repeated name is a UserError."""
    if not text.strip():
        return TASK_NAMES
    names = [t.strip() for t in text.split(",")]
    unknown = [n for n in names if n not in TASK_NAMES]
    if unknown or not all(names):
        names_text = ", ".join(map(repr, unknown or [""]))
        raise UserError(f"unknown task(s) {names_text} in --tasks; valid: {', '.join(TASK_NAMES)}")
    if len(set(names)) != len(names):
        raise UserError(f"--tasks {text!r} names a task twice")
    return tuple(t for t in TASK_NAMES if t in names)
