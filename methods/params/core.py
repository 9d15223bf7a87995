"""Hyperparameters of the first methods: DeepChest, uncertainty weighting, DWA, RLW, FAMO, GradDrop, MGDA,
CAGrad, GradNorm (EW, PCGrad: none)."""

from __future__ import annotations

import json
from importlib import resources
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Sequence

from mtlbench.errors import UserError
from mtlbench.methods.params.common import MethodSpec, NoHyperparameters, is_number, positive_number

MGDA_NORMALIZATIONS = ("none", "l2", "loss", "loss+")
CAGRAD_RESCALES = ("1+c^2", "1+c", "none")
GRADNORM_OPTIMIZERS = ("adam", "sgd")
DEEPCHEST_SIGNALS = ("train-accuracy", "val-accuracy", "train-loss")
DEEPCHEST_INITS = ("constant", "stl", "authors")
AUTHORS_INITIAL_WEIGHTS = "deepchest_authors_initial_weights.json"  # shipped beside this module
# Hyperparameters added after runs were stored, at the value those runs had: left out of a run's identity at that
# value (config.RunConfig.hashed_fields), and filled in for stored runs that lack them (report.load)
PARAMS_ADDED_LATER: dict[str, dict[str, object]] = {"deepchest": {"init": "constant", "stl_accuracies": ""}}
Signal = Literal["train-accuracy", "val-accuracy", "train-loss"]


@dataclass
class DeepChestParams:
    """DeepChest's constants, defaults as in the authors' released code."""

    increase_factor: float = 1.1
    max_weight: float = 1.5
    decay_factor: float = 1.05
    signal: Signal = "train-accuracy"
    initial_weight: float = 1.0
    init_weights_file: str | None = None  # JSON {task: weight} or a list of T weights
    init_accuracies_file: str | None = None  # JSON {task: single-task accuracy}: w = 1 + (1-acc)/2
    # stl: w = 1 + (1 − acc)/2 from this protocol's single-task runs (`run --stl`), their validation accuracy
    # authors: the per-task weights the authors' chest X-ray command starts from (1.0006–1.087, shipped as data:
    # AUTHORS_INITIAL_WEIGHTS)
    init: str = field(
        default="constant", metadata={"note": "constant | stl (from the database's stl runs) | authors (their JSON)"}
    )
    stl_accuracies: str = ""  # with init=stl: the T accuracies, comma-separated, as `mtlbench run` read them

    # Ours, around the released constants (1.1, 1.05, 1.5; DeepChest-MTL weighting/dwbstl.py): the
    # paper gives no range. The signal and initialisation stay as released (variants, not tuning).
    search_space: ClassVar[dict[str, tuple]] = {
        "increase_factor": (1.05, 1.1, 1.2),
        "decay_factor": (1.025, 1.05, 1.1),
        "max_weight": (1.25, 1.5, 2.0),
    }

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """Known signal, factors ≥ 1, max_weight > 0, at most one readable initialisation file."""
        if self.signal not in DEEPCHEST_SIGNALS:
            raise UserError(f"{method}: unknown signal {self.signal!r}; valid: {', '.join(DEEPCHEST_SIGNALS)}")
        if self.increase_factor < 1 or self.decay_factor < 1 or self.max_weight <= 0:
            raise UserError(f"{method}: increase_factor and decay_factor must be ≥ 1 and max_weight > 0")
        if self.init not in DEEPCHEST_INITS:
            raise UserError(f"{method}: unknown init {self.init!r}; valid: {', '.join(DEEPCHEST_INITS)}")
        if self.init != "constant" and (self.init_weights_file or self.init_accuracies_file):
            where = "the single-task runs" if self.init == "stl" else "the authors' released JSON"
            raise UserError(f"{method}: init={self.init} takes the initial weights from {where}: drop the files")
        if self.stl_accuracies:
            stl_accuracies(self.stl_accuracies, task_names, method)
        if self.init_weights_file and self.init_accuracies_file:
            raise UserError(f"{method}: give init_weights_file or init_accuracies_file, not both")
        if self.init_weights_file:
            read_task_values(self.init_weights_file, task_names, "initial weights")
        if self.init_accuracies_file:
            acc = read_task_values(self.init_accuracies_file, task_names, "single-task accuracies")
            if any(a < 0 or a > 1 for a in acc):
                raise UserError(f"{method}: single-task accuracies must lie in [0, 1]")


def authors_initial_weights(task_names: Sequence[str]) -> list[float]:
    """The DeepChest authors' initial weight of each of `task_names` (their released JSON, shipped as data)."""
    text = resources.files("mtlbench.methods.params").joinpath(AUTHORS_INITIAL_WEIGHTS).read_text(encoding="utf-8")
    weights = json.loads(text)["initial_weights"]
    missing = [t for t in task_names if t not in weights]
    if missing:
        raise UserError(f"deepchest: init=authors has weights for the 14 NIH findings only, not {', '.join(missing)}")
    return [float(weights[t]) for t in task_names]


def stl_accuracies(text: str, task_names: Sequence[str], method: str = "deepchest") -> list[float]:
    """The single-task accuracies of `init=stl`: one number in [0, 1] per task, comma-separated in task order."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"{method}: stl_accuracies {text!r} is not a comma-separated list of numbers") from None
    if len(values) != len(task_names) or not all(0 <= v <= 1 for v in values):
        raise UserError(f"{method}: stl_accuracies needs {len(task_names)} accuracies in [0, 1], got {text!r}")
    return values


def read_task_values(path: str, task_names: Sequence[str], what: str, method: str = "deepchest") -> list[float]:
    """One finite number per task, in task order, from a JSON list or {task: value} object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"{method} {what} file not found: {path}") from None
    except (OSError, ValueError) as exc:  # ValueError: undecodable text, bad JSON, a NUL in the path
        raise UserError(f"{method} {what} file {path!r} is not readable JSON: {exc}") from None
    if isinstance(data, list):
        if len(data) != len(task_names):
            raise UserError(f"{method} {what} file {path} lists {len(data)} values; expected {len(task_names)}")
        values = data
    elif isinstance(data, dict):
        missing = [t for t in task_names if t not in data]
        extra = sorted(set(data) - set(task_names))
        if missing or extra:
            raise UserError(
                f"{method} {what} file {path}: missing tasks {missing or 'none'}, unknown keys {extra or 'none'}"
            )
        values = [data[t] for t in task_names]
    else:
        raise UserError(f"{method} {what} file {path} must hold a JSON object or list")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise UserError(f"{method} {what} file {path} holds a non-numeric value")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{method} {what} file {path} holds NaN or infinity; every value must be a finite number")
    return [float(v) for v in values]


@dataclass
class UncertaintyParams:
    """Uncertainty weighting's constants: ρ in Σ exp(−s)L + ρ·s, and the initial s."""

    regularizer: float = field(  # ρ
        default=1.0,
        metadata={
            "note": "ρ in Σ exp(−s)L + ρ·s; 0.5 (--param uncertainty.regularizer=0.5) is "
            "the paper's classification likelihood"
        },
    )
    init_log_var: float = 0.0

    # ρ = 1 (the authors' example code) and ρ = ½ (the paper's classification likelihood); see
    # methods/uncertainty.py
    search_space: ClassVar[dict[str, tuple]] = {"regularizer": (1.0, 0.5)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """ρ > 0 and finite, s₀ finite."""
        if not (self.regularizer > 0 and math.isfinite(self.regularizer)) or not math.isfinite(self.init_log_var):
            raise UserError(f"{method}: regularizer must be a finite number > 0 and init_log_var finite")


@dataclass
class DWAParams:
    """DWA's temperature T (the paper's default 2)."""

    temperature: float = 2.0

    # T = 2 is the paper's (Liu et al., CVPR 2019, eq. 3; FAMO's experiments/utils.py --dwa-temp
    # "Default to 2 like in the original paper"); the grid around it is ours
    search_space: ClassVar[dict[str, tuple]] = {"temperature": (1.0, 2.0, 4.0)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """T finite and > 0."""
        t = self.temperature
        if not (is_number(t) and math.isfinite(t) and t > 0):
            raise UserError(f"{method}: temperature must be a finite number > 0, got {t!r}")


@dataclass
class RLWParams:
    """The standard deviation of the normal prior λ̃ ~ N(0, std²·I) (paper default 1)."""

    std: float = 1.0

    # the paper's standard normal prior (std 1); the grid around it is ours
    search_space: ClassVar[dict[str, tuple]] = {"std": (0.5, 1.0, 2.0)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """std finite and ≥ 0 (0 is equal weighting)."""
        s = self.std
        if not (is_number(s) and math.isfinite(s) and s >= 0):
            raise UserError(f"{method}: std must be a finite number ≥ 0, got {s!r}")


@dataclass
class FAMOParams:
    """FAMO's constants: logit learning rate β, logit weight decay γ, loss floor ε."""

    beta: float = 0.025
    gamma: float = 0.001
    eps: float = 1e-8
    logit_optimizer: Literal["adam", "sgd"] = "adam"

    # γ: the authors' scripts use 1e-3 (experiments/quantum_chemistry/run.sh; celeba/run.sh at
    # 0a6ad06) and 1e-2 (celeba/run.sh at 5b92c20, the default of famo.py and experiments/utils.py);
    # 1e-4 (one decade below) is ours. β = 0.025 in every script of theirs: not searched.
    search_space: ClassVar[dict[str, tuple]] = {"gamma": (1e-4, 1e-3, 1e-2)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """β, ε finite and > 0; γ finite and ≥ 0; a known logit optimizer."""
        if not (
            positive_number(self.beta)
            and positive_number(self.eps)
            and (self.gamma == 0 or positive_number(self.gamma))
        ):
            raise UserError(f"{method}: beta and eps must be finite numbers > 0 and gamma a finite number ≥ 0")
        if self.logit_optimizer not in ("adam", "sgd"):
            raise UserError(f"{method}: unknown logit_optimizer {self.logit_optimizer!r}; valid: adam, sgd")


@dataclass
class GradDropParams:
    """GradDrop's leak k (the share of each task's gradient kept whatever the sign; LibMTL's default 0)."""

    leak: float = 0.0

    # ours: the paper's multitask experiments and LibMTL use leak 0
    search_space: ClassVar[dict[str, tuple]] = {"leak": (0.0, 0.25, 0.5)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """0 ≤ leak ≤ 1."""
        if not (is_number(self.leak) and 0 <= self.leak <= 1):
            raise UserError(f"{method}: leak must be a number in [0, 1], got {self.leak!r}")


@dataclass
class MGDAParams:
    """MGDA's gradient normalization (the authors' code offers none | l2 | loss | loss+).

    Default "loss+", from the authors' configs: intel-isl/MultiObjectiveOptimization/sample.json
    @5d8e8343c56cf3184081f71cc4a661af64e7cf7e (line 8, `"normalization_type": "loss+"`), their one
    released experiment: CelebA's 40 binary attributes with MGDA-UB (`"use_approximation": true`).
    Until issue 17 the default was "none" (the paper's algorithm): `--param mgda.normalization=none`.
    """

    normalization: str = field(
        default="loss+", metadata={"note": "none | l2 | loss | loss+; loss+ as in the authors' CelebA config"}
    )

    # every normalization of the authors' code (MultiObjectiveOptimization, min_norm_solvers.py);
    # their CelebA config (sample.json, 40 binary tasks, the closest to ours) uses loss+
    search_space: ClassVar[dict[str, tuple]] = {"normalization": MGDA_NORMALIZATIONS}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """A known normalization."""
        if self.normalization not in MGDA_NORMALIZATIONS:
            raise UserError(
                f"{method}: unknown normalization {self.normalization!r}; valid: {', '.join(MGDA_NORMALIZATIONS)}"
            )


@dataclass
class CAGradParams:
    """CAGrad's constant c and the final rescaling of d (authors' defaults)."""

    c: float = 0.4
    rescale: str = "1+c^2"

    # c from 0.1 to 0.9: the authors' scripts use 0.4 (nyuv2/run.sh), 0.5 (mtrl MT50) and 0.9 (MT10)
    search_space: ClassVar[dict[str, tuple]] = {"c": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """A known rescale; c finite and ≥ 0."""
        if self.rescale not in CAGRAD_RESCALES:
            raise UserError(f"{method}: unknown rescale {self.rescale!r}; valid: {', '.join(CAGRAD_RESCALES)}")
        if not (is_number(self.c) and math.isfinite(self.c) and self.c >= 0):
            raise UserError(f"{method}: c must be a finite number ≥ 0, got {self.c!r}")


@dataclass
class GradNormParams:
    """GradNorm's asymmetry α (paper's default 1.5) and the task-weight optimizer."""

    alpha: float = 1.5
    lr: float = field(  # the weights' own Adam lr: see methods/gradnorm.py for its source
        default=0.025, metadata={"note": "the task weights' own learning rate (AuxiLearn's GradNorm baseline)"}
    )
    optimizer: str = "adam"
    min_weight: float = 1e-3

    # α: ours, around the paper's 1.5 (Chen et al. tune α per dataset and use one value per
    # experiment); lr of the weights: 0.025 is FAMO/Nash-MTL's --method-params-lr, the grid around it ours
    search_space: ClassVar[dict[str, tuple]] = {"alpha": (0.5, 1.0, 1.5, 2.0, 3.0), "lr": (0.005, 0.025, 0.1)}

    def check(self, method: str, task_names: Sequence[str]) -> None:
        """A known optimizer; lr > 0, α finite, 0 < min_weight < 1."""
        if self.optimizer not in GRADNORM_OPTIMIZERS:
            raise UserError(f"{method}: unknown optimizer {self.optimizer!r}; valid: {', '.join(GRADNORM_OPTIMIZERS)}")
        if not (self.lr > 0 and math.isfinite(self.alpha) and 0 < self.min_weight < 1):
            raise UserError(f"{method}: lr must be > 0, alpha finite, and 0 < min_weight < 1")


CORE_SPECS: dict[str, MethodSpec] = {
    "ew": MethodSpec("losses", NoHyperparameters, "sum-to-T", syncs_host=False),
    "deepchest": MethodSpec("losses", DeepChestParams, "none", syncs_host=False),
    "uncertainty": MethodSpec("losses", UncertaintyParams, "learned", syncs_host=False),
    "dwa": MethodSpec("losses", DWAParams, "sum-to-T", syncs_host=False),
    "rlw": MethodSpec("losses", RLWParams, "sum-to-T", syncs_host=False),
    "famo": MethodSpec(
        "losses", FAMOParams, "none", syncs_host=False, version=2
    ),  # v1 was the next-batch approximation
    "famo-nextbatch": MethodSpec("losses", FAMOParams, "none", syncs_host=False),
    "mgda": MethodSpec("shared_params", MGDAParams, "sum-to-T"),
    "mgda-ub": MethodSpec("shared_features", MGDAParams, "sum-to-T"),
    "pcgrad": MethodSpec("shared_params", NoHyperparameters, "none"),
    "cagrad": MethodSpec("shared_params", CAGradParams, "none"),
    "gradnorm": MethodSpec("last_shared_layer", GradNormParams, "sum-to-T"),
    "graddrop": MethodSpec("shared_features", GradDropParams, "no-weights", syncs_host=False),
}
