"""Run configuration: one RunConfig dataclass, named presets, JSON file overrides, the hash.

Two runs are "the same cell" exactly when their `config_hash` matches: everything that can
change a result is in it (method and its hyperparameters, data request, training protocol,
resolved device); paths and display options are not.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
import typing
from typing import Any, Literal, Sequence

from mtlbench.errors import UserError
from mtlbench.tasks import task_subset

# The one list of each choice: the CLI's help, `--config` and preset validation and every module
# that branches on one read them from these types (`choices(field)`).
Optimizer = Literal["adamw", "adam", "sgd", "rmsprop"]
Schedule = Literal["cosine", "none"]
Head = Literal["bce", "ce2"]
Loss = Literal["bce", "pos-weight", "focal", "asl"]  # see losses.py
Augment = Literal["none", "light", "paper"]
Selection = Literal["best-val-auroc", "last"]
Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "tf32", "bf16"]  # see backend.py
GradEngine = Literal["auto", "batched", "loop"]  # see grads.py
Pretrained = Literal["none", "imagenet"]
Arch = Literal["resnet18", "resnet50", "densenet121"]  # see model.ARCHS
Views = Literal["all", "frontal", "PA", "AP"]  # frontal = PA and AP (NIH has no other)
# official: the dataset's own patient-wise split; random-image: the DeepChest authors' split by image (leaky)
SplitProtocol = Literal["official", "random-image"]
# what an uncertain (−1) label of CheXpert / MIMIC-CXR becomes: missing, negative or positive (the U-Ignore,
# U-Zeros and U-Ones policies of Irvin et al., "CheXpert", AAAI 2019, section 4)
Uncertain = Literal["ignore", "zeros", "ones"]
# where the data comes from, and `deterministic` (the same math with other kernels, recorded
# with the run's environment like cuDNN autotuning): not part of a cell's identity
UNHASHED_FIELDS = ("data_dir", "cache_dir", "allow_missing", "download", "deterministic", "test_data_dir")
# Fields added after runs were first stored, with the value every earlier run had: at that value
# they are left out of the hash, so earlier runs keep their identity (and are skipped on rerun).
LEGACY_VALUES: dict[str, Any] = {
    "precision": "fp32",
    "compile": False,
    "loss": "bce",
    "tasks": "",
    "split": "official",
    "arch": "resnet18",
    "neck": 0,
    "augment_eval": False,
    "method_optimizers": "",
    "synth_missing": 0.0,
    "synth_shortcuts": False,
    "test_dataset": "",
}
# Fields that only these datasets read, added after runs on others were stored: left out of the
# hash of a run on any other dataset, where they cannot change a result, so those runs keep their identity.
DATASET_FIELDS: dict[str, tuple[str, ...]] = {
    "uncertain": ("chexpert", "chexpert-synth", "mimic-cxr"),
    "synth_test_images": ("cxr14-synth", "chexpert-synth", "padchest-synth"),
}
# RunConfig fields a config file cannot set (the sweep fills them per cell), and what sets them
NOT_FROM_FILE: dict[str, str] = {
    "method": "use --methods",
    "method_params": "use --param METHOD.NAME=VALUE",
    "seed": "use --seeds",
    "data_fingerprint": "it is computed from the dataset",
}
COMMAND_LINE = "command line"  # the source name of the options' layer: its messages name flags


@dataclass(frozen=True)
class RunConfig:
    """Everything one run (method × dataset × seed) is defined by."""

    method: str = "ew"
    method_params: dict[str, Any] = field(default_factory=dict)
    dataset: str = "cxr14-synth"
    seed: int = 0
    # data
    image_size: int = 32
    synth_images: int = 1600  # cxr14-synth: train + val images
    synth_test_images: int = 12000  # cxr14-synth: test images, from patients apart from train/val
    data_seed: int = 0
    val_fraction: float = 0.1
    views: Views = "all"
    split: SplitProtocol = (
        "official"  # random-image: images of one patient in training and test (mtlbench/image_split.py)
    )
    synth_missing: float = 0.0  # cxr14-synth: this fraction of labels left out, per task and image (seeded)
    synth_shortcuts: bool = False  # cxr14-synth: draw shortcut confounders (chest drains, portable marks)
    uncertain: Uncertain = "ignore"  # datasets with uncertain (−1) labels: ignore = missing, zeros, ones
    # another dataset whose test split the selected model is also evaluated on (shared tasks only): stored with
    # the run as its cross-dataset test (`--test-dataset`, read from `--test-data-dir`)
    test_dataset: str = ""
    test_data_dir: str = ""
    data_fingerprint: str = ""  # filled in from the loaded dataset: new files make new cells
    # training protocol, identical for every method of a sweep
    epochs: int = 3
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: Optimizer = "adamw"
    # "METHOD=OPTIMIZER,…": a method trained with its own optimizer (the DeepChest authors trained their uncertainty
    # and GradNorm baselines with Adam, EW and DeepChest with RMSprop); shared by the sweep, so one protocol
    method_optimizers: str = ""
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Schedule = "cosine"
    head: Head = "bce"
    loss: Loss = "bce"  # the per-task training loss, the same for every method (losses.py)
    tasks: str = ""  # the tasks trained on: "" = all 14; one name = a single-task (STL) baseline run (`run --stl`)
    pretrained: Pretrained = "none"
    arch: Arch = "resnet18"  # the trunk: resnet18 is the harness of every preset but `authors`
    neck: int = 0  # > 0: a shared Linear(trunk width → neck) + ReLU before the heads (the DeepChest authors' 512)
    augment: Augment = "none"
    hflip: bool = False  # horizontal flips: off by default (the heart's side carries meaning)
    augment_eval: bool = False  # the DeepChest authors' evaluation: the training augmentation on val and test too
    normalize_mean: float = 0.5
    normalize_std: float = 0.5
    select: Selection = "best-val-auroc"
    grad_engine: GradEngine = "auto"  # resolved per device and method before a run: see grads.resolve_engine
    freeze_trunk: bool = False  # linear probe: the ResNet18 trunk is fixed, only the heads train
    device: Device = "auto"
    precision: Precision = "auto"  # resolved per device before a run: bf16 on CUDA, fp32 on CPU (backend.py)
    compile: bool = False  # torch.compile the model (loss-weighting methods only)
    deterministic: bool = False  # deterministic kernels where PyTorch has them (see backend.configure)
    # where and how to get the data: not part of the hash (data_fingerprint covers the data)
    data_dir: str = "data"
    cache_dir: str = ""  # image caches; "" = <data root>/mtlbench-cache
    allow_missing: bool = False
    download: bool = False

    def method_optimizer(self) -> str:
        """The optimizer this run's method trains with: its entry in `method_optimizers`, else `optimizer`."""
        return parse_method_optimizers(self.method_optimizers).get(self.method, self.optimizer)

    def resolved(self) -> dict[str, Any]:
        """Every field, with the method's hyperparameters resolved (defaults included) and the
        version of its math: what a run stores and what its identity is computed from."""
        from mtlbench.hyperparams import method_version, resolved_params  # torch-free

        d = asdict(self)
        d["method_params"] = resolved_params(self.method, self.method_params)
        d["method_version"] = method_version(self.method)
        return d

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that define the cell: all but where and how the data is fetched, and the
        newer fields at their legacy value; the method's hyperparameters resolved, so that an
        explicit default and an implicit one are one cell, and a changed default is a new one."""
        from mtlbench.methods.params import PARAMS_ADDED_LATER  # torch-free

        d = self.resolved()
        for name in UNHASHED_FIELDS:
            d.pop(name)
        later = PARAMS_ADDED_LATER.get(self.method, {})
        d["method_params"] = {k: v for k, v in d["method_params"].items() if k not in later or v != later[k]}
        for name, value in LEGACY_VALUES.items():
            if d[name] == value:
                d.pop(name)
        for name, datasets in DATASET_FIELDS.items():
            if self.dataset not in datasets:
                d.pop(name)
        return d

    def config_hash(self) -> str:
        """A short stable hash of `hashed_fields()`."""
        blob = json.dumps(self.hashed_fields(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        """The full config as JSON, hyperparameters resolved (stored with each run)."""
        return json.dumps(self.resolved(), sort_keys=True, default=str)


PRESETS: dict[str, dict[str, Any]] = {
    # seconds on a CPU: CI and tests
    "smoke": dict(image_size=32, synth_images=320, synth_test_images=80, epochs=2, batch_size=32),
    # the CPU default: every method in under 10 minutes on 2 CPU cores (3 epochs so that
    # DWA, which needs two epochs of history, differs from EW). Train and val keep the sizes they
    # had when 2,000 images held all three splits; the test split is sized so that every task has
    # ≥ 20 positives at NIH's prevalence (Hernia is 0.2%; docs/synth_test_split.md). Smoke keeps
    # its old 80 test images: CI time, not statistics.
    "quick": dict(image_size=32, synth_images=1600, synth_test_images=12000, epochs=3, batch_size=64),
    # the smallest real comparison on 2 CPU cores (about 45 minutes, README): 48 px, 6,000
    # train+val images (84 steps per epoch at batch 64, 672 steps), 3 seeds, and the methods whose
    # step costs about what EW's does (PRESET_SWEEPS)
    "lite": dict(image_size=48, synth_images=6000, synth_test_images=12000, epochs=8, batch_size=64),
    # the DeepChest authors' hyperparameters on the fair protocol: their released chest X-ray training command's
    # size, epochs, batch, optimizer, learning rate, heads and augmentation, with the harness's ResNet18, the
    # dataset's patient-wise split, model selection on validation and unaugmented evaluation
    "paper": dict(
        image_size=128,
        synth_images=8000,
        synth_test_images=15000,
        epochs=15,
        batch_size=128,
        optimizer="rmsprop",
        lr=1e-3,
        weight_decay=0.0,
        schedule="none",
        head="ce2",
        augment="paper",
        normalize_mean=0.5,
        normalize_std=0.5,
    ),
}
# The DeepChest authors' released protocol, as closely as the harness allows (youssefkhalil320/DeepChest-MTL@0c45bdd:
# multitask_learning/MTL_training/train.py and README.md "xray", models/xray_resnet.py, Kendal_MTL/train.py,
# GradNorm_MTL/train.py). Three of its settings are not standard practice and are named where applied: the split
# by image (leaky: --split random-image), the training augmentation at evaluation (--augment-eval) and the last
# epoch's model (--select last, no model selection).
# optim.Adam in Kendal_MTL/train.py and GradNorm_MTL/train.py (gradnorm too: the ladder's rung before their GradNorm)
AUTHORS_OPTIMIZERS = "uncertainty=adam,gradnorm=adam,gradnorm-authors=adam"
PRESETS["authors"] = {
    **PRESETS["paper"],
    "arch": "resnet50",  # XrayResNet(resnet_version="resnet50"), ImageNet weights (pretrained=True)
    "neck": 512,  # self.fc = nn.Linear(2048, 512), F.relu before the 14 heads
    "pretrained": "imagenet",
    "split": "random-image",  # random_split(full_dataset, [80%, 10%, 10%]) over images
    "augment_eval": True,  # one `transform` (RandomRotation(30), RandomResizedCrop, flip) for the whole dataset
    "select": "last",  # the model after the last epoch is saved and tested
    "method_optimizers": AUTHORS_OPTIMIZERS,
}


# The sweep a preset runs when --methods / --seeds are not given (otherwise: every method, seed 0), and the
# method hyperparameters it sets unless --param sets them (only for the methods of the sweep).
PRESET_SWEEPS: dict[str, dict[str, Any]] = {
    "lite": {"methods": "ew,deepchest,uncertainty,dwa,famo", "seeds": "0,1,2"},
    "authors": {
        "methods": "ew,deepchest,uncertainty,gradnorm-authors",  # the authors' comparison (paper, Table 2)
        "seeds": "0",
        # their configs/xray_initial_weights_resnet_config.json; their uncertainty loss exp(−2s)·L + s is ours
        # with ρ = ½ in the parameter u = 2s (Kendal_MTL/trainers/mtl_kendal_train.py); the same loss, but Adam
        # moves our u as fast as theirs moved s, i.e. their s half as fast
        "params": ("deepchest.init=authors", "uncertainty.regularizer=0.5"),
    },
}


def preset_params(preset: str, methods: Sequence[str]) -> list[str]:
    """The preset's `--param` items for the methods of the sweep (given before the user's, which win)."""
    return [p for p in PRESET_SWEEPS.get(preset, {}).get("params", ()) if p.split(".", 1)[0] in methods]


def preset_sweep(preset: str, methods: str | None, seeds: str | None) -> tuple[str, str]:
    """(methods, seeds) of a sweep: the options given, else the preset's own, else the core methods and seed 0."""
    own = PRESET_SWEEPS.get(preset, {})
    return (
        own.get("methods", "core") if methods is None else methods,
        own.get("seeds", "0") if seeds is None else seeds,
    )


def parse_method_optimizers(text: str) -> dict[str, str]:
    """{method: optimizer} of a `--method-optimizers` value "METHOD=OPTIMIZER,…" ("" = none); UserError if malformed."""
    from mtlbench.hyperparams import all_method_specs  # torch-free

    out: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        method, sep, optimizer = (s.strip() for s in item.partition("="))
        if not sep or not method or not optimizer:
            raise UserError(f"--method-optimizers: {item!r} is not METHOD=OPTIMIZER (e.g. uncertainty=adam)")
        if optimizer not in choices("optimizer"):
            raise UserError(
                f"--method-optimizers: unknown optimizer {optimizer!r}; valid: {', '.join(choices('optimizer'))}"
            )
        if method not in all_method_specs():
            raise UserError(f"--method-optimizers: unknown method {method!r}; see `mtlbench list`")
        if method in out:
            raise UserError(f"--method-optimizers: {method} is given twice")
        out[method] = optimizer
    return out


def apply_overrides(config: RunConfig, overrides: dict[str, Any], source: str) -> RunConfig:
    """Return `config` with `overrides` applied; unknown keys or wrong types are a UserError."""
    known = {f.name: f for f in fields(RunConfig)}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        guesses = [(u, m[0]) for u in unknown if (m := difflib.get_close_matches(u, list(known), n=1, cutoff=0.75))]
        if len(unknown) == 1 and guesses:
            hint = f" (did you mean {guesses[0][1]}?)"
        else:
            hint = f" (did you mean {', '.join(f'{g} for {u}' for u, g in guesses)}?)" if guesses else ""
        settable = ", ".join(k for k in known if k not in NOT_FROM_FILE)
        raise UserError(f"{source}: unknown setting(s) {', '.join(unknown)}{hint}; valid: {settable}")
    clean: dict[str, Any] = {}
    for key, value in overrides.items():
        default = getattr(RunConfig(), key)
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"{source}: {key} must be true or false, got {value!r}")
        if isinstance(default, bool) or default is None:
            clean[key] = value
        elif isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[key] = _finite(value, key, source)
        elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
            raise UserError(f"{source}: {key} must be {type(default).__name__}, got {value!r}")
        else:
            clean[key] = value
    return replace(config, **clean)


def _finite(value: int | float, key: str, source: str) -> float:
    """`value` as a float; a UserError if it is NaN or infinite (or an integer too large for a float)."""
    try:
        number, shown = float(value), str(value)
    except OverflowError:
        number, shown = math.inf, "a number too large for a float"
    if not math.isfinite(number):
        name = f"--{key.replace('_', '-')}" if source == COMMAND_LINE else f"{source}: {key}"
        raise UserError(f"{name} must be a finite number, got {shown}")
    return number


LAUNCHER_KEY = "slurm"  # a config file's object of --slurm-* settings (mtlbench/cluster.py), not RunConfig fields


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON file of RunConfig overrides (UTF-8, a leading byte-order mark allowed).

    Fields the sweep sets per run (method, seed, …) are refused with the flag that sets them; the launcher's
    object (LAUNCHER_KEY) is left out (see `launcher_settings`).
    """
    data = {k: v for k, v in read_config_object(path).items() if k != LAUNCHER_KEY}
    fixed = [k for k in NOT_FROM_FILE if k in data]
    if fixed:
        raise UserError(f"config file {path}: {fixed[0]} cannot be set in a config file; {NOT_FROM_FILE[fixed[0]]}")
    return data


def launcher_settings(path: str | Path) -> dict[str, Any]:
    """The config file's "slurm" object (settings of `run --launcher slurm`), {} where it has none."""
    section = read_config_object(path).get(LAUNCHER_KEY, {})
    if not isinstance(section, dict):
        raise UserError(f'config file {path}: "{LAUNCHER_KEY}" must be an object such as {{"partition": "gpu"}}')
    return section


def read_config_object(path: str | Path) -> dict[str, Any]:
    """The JSON object of a config file, or a one-line UserError saying what is wrong with the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise UserError(f"config file not found: {p}") from None
    except UnicodeDecodeError as exc:
        raise UserError(
            f"config file {p} is not a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            'it must hold a JSON object of settings such as {"epochs": 5}'
        ) from None
    except IsADirectoryError:
        raise UserError(f"config file {p} is a directory; pass the path of a JSON file") from None
    except OSError as exc:
        raise UserError(f"config file {p} is not readable: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UserError(
            f"config file {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, dict):
        raise UserError(
            f'config file {p} must hold a JSON object of settings such as {{"epochs": 5}}, '
            f"got {_JSON_TYPE_NAMES.get(type(data), type(data).__name__)}"
        )
    return data


_JSON_TYPE_NAMES = {
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def choices(field_name: str) -> tuple[str, ...]:
    """The valid values of a RunConfig field typed with a Literal (e.g. "optimizer")."""
    return typing.get_args(typing.get_type_hints(RunConfig)[field_name])


CHOICE_FIELDS = tuple(
    name for name, hint in typing.get_type_hints(RunConfig).items() if typing.get_origin(hint) is Literal
)


def validate(config: RunConfig) -> None:
    """Reject out-of-range or unknown settings with one actionable line."""

    def choice(name: str, valid: tuple[str, ...]) -> None:
        if getattr(config, name) not in valid:
            raise UserError(f"unknown --{name.replace('_', '-')} {getattr(config, name)!r}; valid: {', '.join(valid)}")

    def at_least(name: str, low: float, high: float | None = None) -> None:
        v = getattr(config, name)
        if v < low or (high is not None and v > high):
            bound = f"between {low} and {high}" if high is not None else f"≥ {low}"
            raise UserError(f"--{name.replace('_', '-')} must be {bound}, got {v}")

    for name in CHOICE_FIELDS:
        choice(name, choices(name))
    at_least("seed", 0, 2**31 - 1)
    at_least("data_seed", 0, 2**31 - 1)
    at_least("epochs", 1, 10_000)
    at_least("batch_size", 2, 65_536)
    at_least("eval_batch_size", 1, 65_536)
    at_least("image_size", 16, 1024)
    at_least("synth_images", 50, 112_120)
    at_least("synth_test_images", 50, 112_120)
    at_least("val_fraction", 0.01, 0.5)
    if not 0.0 <= config.synth_missing < 1.0:
        raise UserError(f"--synth-missing must be at least 0 and below 1, got {config.synth_missing}")
    if config.test_data_dir and not config.test_dataset:
        raise UserError("--test-data-dir is where --test-dataset's files are: give --test-dataset NAME too")
    if config.synth_missing and config.dataset != "cxr14-synth":
        raise UserError(f"--synth-missing applies to cxr14-synth only, not --dataset {config.dataset}")
    if config.synth_shortcuts and config.dataset != "cxr14-synth":
        raise UserError(f"--synth-shortcuts applies to cxr14-synth only, not --dataset {config.dataset}")
    at_least("neck", 0, 65_536)
    if not config.lr > 0:
        raise UserError(f"--lr must be > 0, got {config.lr}")
    if config.weight_decay < 0:
        raise UserError(f"--weight-decay must be ≥ 0, got {config.weight_decay}")
    if not config.normalize_std > 0:
        raise UserError("normalize_std must be > 0")
    task_subset(config.tasks)
    parse_method_optimizers(config.method_optimizers)
    if config.augment_eval and config.augment == "none":
        raise UserError("--augment-eval applies the training augmentation to evaluation: give --augment light or paper")
    if config.loss != "bce" and config.head != "bce":
        raise UserError(f"--loss {config.loss} needs one logit per task: use --head bce (got --head {config.head})")


def build_config(preset: str, layers: list[tuple[dict[str, Any], str]] = ()) -> RunConfig:
    """Defaults ← preset ← each (overrides, source) layer in turn (config file, command line), validated."""
    if preset not in PRESETS:
        raise UserError(f"unknown --preset {preset!r}; valid: {', '.join(PRESETS)}")
    config = apply_overrides(RunConfig(), PRESETS[preset], f"preset {preset}")
    for overrides, source in layers:
        config = apply_overrides(config, overrides, source)
    validate(config)
    return config
