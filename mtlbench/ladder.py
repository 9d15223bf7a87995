"""The ladder from the fair protocol to the DeepChest authors' one, one factor at a time.

Rung 0 is the sweep's own settings (`--preset paper`: the authors' hyperparameters on the fair
protocol). Each later rung adds one of the authors' choices to the one before, in the order the
issue set: split → model selection → evaluation transforms → optimizers → the methods' released
implementations → backbone. The last rung is `--preset authors` (with the sweep's sizes). Every
rung runs the same four methods: EW, DeepChest and the authors' two baselines, uncertainty
weighting and GradNorm — as published up to the implementations rung, as released from it on.

`mtlbench run --ladder` trains every rung; the report's ladder section finds them again in the
database (`rung_configs`) and shows DeepChest's and the best baseline's accuracy and AUROC per rung.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mtlbench.config import AUTHORS_OPTIMIZERS, PRESETS, RunConfig

PUBLISHED_METHODS = ("ew", "deepchest", "uncertainty", "gradnorm")
RELEASED_METHODS = ("ew", "deepchest", "uncertainty", "gradnorm-authors")
# what the released code runs of each method where it differs from the published one (config.PRESET_SWEEPS)
RELEASED_PARAMS: dict[str, dict[str, Any]] = {"deepchest": {"init": "authors"}, "uncertainty": {"regularizer": 0.5}}


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: what it changes in the settings, and whether the methods are the released ones."""

    name: str
    settings: dict[str, Any]
    released: bool = False

    def methods(self) -> tuple[str, ...]:
        """The four methods this rung trains."""
        return RELEASED_METHODS if self.released else PUBLISHED_METHODS

    def method_params(self) -> dict[str, dict[str, Any]]:
        """Their hyperparameters beyond the defaults."""
        return {m: dict(p) for m, p in RELEASED_PARAMS.items()} if self.released else {}


AUTHORS = PRESETS["authors"]
RUNGS: tuple[Rung, ...] = (
    Rung("fair protocol (rung 0)", {}),
    Rung("+ split by image (leaky)", {"split": AUTHORS["split"]}),
    Rung("+ last epoch, no model selection", {"select": AUTHORS["select"]}),
    Rung("+ training augmentation at evaluation", {"augment_eval": AUTHORS["augment_eval"]}),
    Rung("+ Adam for the baselines", {"method_optimizers": AUTHORS_OPTIMIZERS}),
    Rung("+ the methods as released (their GradNorm, uncertainty ρ = ½, DeepChest's initial weights)", {}, True),
    Rung(
        "+ ResNet50 + 512 neck, ImageNet weights (the authors' protocol)",
        {k: AUTHORS[k] for k in ("arch", "neck", "pretrained")},
        True,
    ),
)


def rung_configs(base: RunConfig) -> list[RunConfig]:
    """The settings of every rung starting from `base` (rung 0), each rung's changes added to the last's."""
    configs, settings = [], {}
    for rung in RUNGS:
        settings = {**settings, **rung.settings}
        configs.append(replace(base, **settings))
    return configs


def is_rung_zero(config: RunConfig) -> bool:
    """Whether `config` can start a ladder: none of the authors' protocol choices made yet."""
    start = {"split": "official", "select": "best-val-auroc", "augment_eval": False, "method_optimizers": ""}
    return all(getattr(config, k) == v for k, v in start.items())
