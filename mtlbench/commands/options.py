"""Flags shared by several commands: those that map to RunConfig fields, and how a command's
settings are layered (preset ← --config file ← flags given on the command line)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from mtlbench.config import CHOICE_FIELDS, COMMAND_LINE, PRESETS, RunConfig, build_config, choices, load_config_file
from mtlbench.errors import UserError

DEFAULT_RESULTS = "results/mtlbench.sqlite"
TENSORBOARD_MISSING = "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"

# command-line flag → (RunConfig field, type, help, group): data options say which data to use (`run`,
# `tune`, `data prepare|verify`); run options say how to train (`run`, `tune`)
OPTIONS: dict[str, tuple[str, type, str, str]] = {
    "--dataset": ("dataset", str, "dataset name (default cxr14-synth; see `mtlbench list`)", "data"),
    "--image-size": ("image_size", int, "square image size in pixels", "data"),
    "--data-dir": (
        "data_dir",
        str,
        "root of the dataset: the NIH download folder, the folder of chestmnist*.npz, "
        "or where cxr14-synth is generated (default data)",
        "data",
    ),
    "--cache-dir": ("cache_dir", str, "where preprocessed image caches go (default <data-dir>/mtlbench-cache)", "data"),
    "--synth-images": ("synth_images", int, "number of synthetic train + val images (cxr14-synth)", "data"),
    "--synth-test-images": (
        "synth_test_images",
        int,
        "number of synthetic test images, drawn from other patients "
        "than train + val; independent of --synth-images (cxr14-synth; "
        + ", ".join(f"{name} {p['synth_test_images']:,}" for name, p in PRESETS.items())
        + ")",
        "data",
    ),
    "--synth-missing": (
        "synth_missing",
        float,
        "cxr14-synth: leave out this fraction of the labels, per task and image (seeded by --data-seed), "
        "to try methods on missing labels; default 0",
        "data",
    ),
    "--uncertain": (
        "uncertain",
        str,
        "what an uncertain (−1) CheXpert / MIMIC-CXR label becomes: ignore = missing (default), zeros, ones "
        "(the CheXpert paper's U-Ignore, U-Zeros, U-Ones)",
        "data",
    ),
    "--test-dataset": (
        "test_dataset",
        str,
        "also evaluate the selected model on this dataset's test split (the tasks it labels; stored as the run's "
        "cross-dataset test, shown in the report's generalization table)",
        "data",
    ),
    "--test-data-dir": ("test_data_dir", str, "where --test-dataset's files are (default: --data-dir)", "data"),
    "--data-seed": ("data_seed", int, "seed of the dataset (generation and validation split)", "data"),
    "--val-fraction": (
        "val_fraction",
        float,
        "fraction of train_val patients used for validation (nih-cxr14, cxr14-synth)",
        "data",
    ),
    "--views": (
        "views",
        str,
        "which X-ray views: all, frontal (PA and AP), PA or AP (chexpert, mimic-cxr and padchest have laterals too)",
        "data",
    ),
    "--split": (
        "split",
        str,
        "official = the dataset's patient-wise split; random-image = the DeepChest authors' split by image, "
        "LEAKY: a test image's patient may have images in training (half the official test images, "
        "train and val drawn by image from the rest, at the official sizes)",
        "data",
    ),
    "--epochs": ("epochs", int, "training epochs", "run"),
    "--batch-size": ("batch_size", int, "training batch size", "run"),
    "--lr": ("lr", float, "learning rate", "run"),
    "--optimizer": ("optimizer", str, "optimizer of the model", "run"),
    "--weight-decay": ("weight_decay", float, "weight decay", "run"),
    "--method-optimizers": (
        "method_optimizers",
        str,
        "METHOD=OPTIMIZER,… : these methods train with their own optimizer (the DeepChest authors' baselines: "
        "uncertainty=adam,gradnorm-authors=adam); the rest with --optimizer",
        "run",
    ),
    "--schedule": ("schedule", str, "learning-rate schedule (cosine decay to 0, or constant)", "run"),
    "--head": ("head", str, "task heads: bce = one logit per task, ce2 = a 2-class softmax per task", "run"),
    "--tasks": (
        "tasks",
        str,
        "train on these tasks only, comma-separated (a model with only their heads; its own protocol in the "
        "report); default all 14. For the single-task baseline use --stl",
        "run",
    ),
    "--loss": (
        "loss",
        str,
        "per-task training loss: bce; pos-weight = class-balanced BCE (negatives/positives of the training split); "
        "focal (γ 2, α 0.25); asl (asymmetric loss, γ− 4, γ+ 0, clip 0.05)",
        "run",
    ),
    "--augment": (
        "augment",
        str,
        "light = rotation ±10°, scale, shift on the device; paper = rotation 30°, resized crop, flip",
        "run",
    ),
    "--pretrained": ("pretrained", str, "trunk initialisation", "run"),
    "--arch": (
        "arch",
        str,
        "the trunk: resnet18 (the harness), resnet50 (the DeepChest authors'), densenet121 (CheXNet's)",
        "run",
    ),
    "--neck": ("neck", int, "width of a shared Linear+ReLU between trunk and heads; 0 = none (authors: 512)", "run"),
    "--select": ("select", str, "model selection on validation", "run"),
    "--grad-engine": (
        "grad_engine",
        str,
        "per-task gradients: auto = the measured faster one (batched on CUDA for "
        "feature/last-layer methods, loop otherwise), batched = one vectorized "
        "backward, loop = T backwards",
        "run",
    ),
    "--device": ("device", str, "where to train (auto = cuda when there is one)", "run"),
    "--precision": (
        "precision",
        str,
        "auto = bf16 on CUDA, fp32 on CPU; tf32 on CUDA only; bf16 = autocast; "
        "recorded: runs of different precision are never merged",
        "run",
    ),
}
DATA_OPTIONS = {flag: spec[:3] for flag, spec in OPTIONS.items() if spec[3] == "data"}
RUN_OPTIONS = {flag: spec[:3] for flag, spec in OPTIONS.items() if spec[3] == "run"}
DATA_SWITCHES: dict[str, tuple[str, str]] = {
    "--allow-missing": (
        "allow_missing",
        "train on the images present when listed images are missing or unreadable (counts are stored with each run)",
    ),
    "--download": ("download", "let medmnist download the ChestMNIST file into --data-dir"),
    "--synth-shortcuts": (
        "synth_shortcuts",
        "cxr14-synth: draw shortcut confounders (a chest drain on most images NIH labels Pneumothorax, a portable "
        "marker on AP images, the more often the more findings), to try methods on shortcuts; off by default",
    ),
}
RUN_SWITCHES: dict[str, tuple[str, str]] = {
    "--hflip": ("hflip", "random horizontal flips (off by default: the heart's side carries meaning)"),
    "--augment-eval": (
        "augment_eval",
        "apply the training --augment to validation and test images too (the DeepChest authors' evaluation; "
        "not standard practice: scores are of augmented images)",
    ),
    "--compile": (
        "compile",
        "torch.compile the model (loss-weighting methods only; the first steps of each run pay the compilation)",
    ),
    "--deterministic": (
        "deterministic",
        "deterministic kernels on CUDA where PyTorch has them, cuDNN autotuning "
        "off (slower; recorded with each run; see README, Determinism)",
    ),
    "--freeze-trunk": (
        "freeze_trunk",
        "linear probe: keep the ResNet18 trunk fixed and train only the task heads "
        "(loss-weighting methods only; usually with --pretrained imagenet)",
    ),
}
TRAINING_OPTIONS = {**DATA_OPTIONS, **RUN_OPTIONS}
TRAINING_SWITCHES = {**DATA_SWITCHES, **RUN_SWITCHES}


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2, like every other user error."""

    def error(self, message: str) -> None:
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_settings(
    parser: argparse.ArgumentParser,
    options: dict[str, tuple[str, type, str]],
    switches: dict[str, tuple[str, str]],
    preset_help: str = "",
) -> None:
    """--preset, --config and one flag per RunConfig field in `options` and `switches` (default None:
    not given, the preset or the config file decides)."""
    parser.add_argument("--preset", default="quick", help=f"{' | '.join(PRESETS)} ({preset_help}default quick)")
    parser.add_argument("--config", help="JSON file of settings (RunConfig fields), applied after the preset")
    for flag, (field_name, typ, helptext) in options.items():
        if field_name in CHOICE_FIELDS:  # the valid values from the config's type, not written out here
            helptext = f"{helptext}; one of: {' | '.join(choices(field_name))}"
        parser.add_argument(flag, type=typ, default=None, help=helptext)
    for flag, (_, helptext) in switches.items():
        parser.add_argument(flag, action="store_const", const=True, default=None, help=helptext)


def add_training_settings(parser: argparse.ArgumentParser, param_help: str) -> None:
    """What `run` and `tune` share: --preset, --config, every data and run flag, --param, --results,
    --tensorboard."""
    add_settings(parser, TRAINING_OPTIONS, TRAINING_SWITCHES)
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE", help=param_help)
    add_results(parser)
    parser.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write each run's per-epoch validation AUROC, training losses, task weights and step time, "
        "and its config, as TensorBoard events in DIR/<dataset>/<method>-seed<seed>-<config hash> (view them "
        "with `tensorboard --logdir DIR`; the results database stays the record). Needs pip install -e "
        "'.[tensorboard]'",
    )


def tensorboard_installed() -> bool:
    """Whether the tensorboard package can be imported (found, not imported: no torch)."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_dir(args: argparse.Namespace) -> Path | None:
    """--tensorboard's folder, checked before any data or training work (tensorboard installed, the path
    not a file); None without the flag."""
    if args.tensorboard is None:
        return None
    if not tensorboard_installed():
        raise UserError(TENSORBOARD_MISSING)
    folder = Path(args.tensorboard).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--tensorboard {args.tensorboard} is a file, not a folder")
    return folder


def add_methods(parser: argparse.ArgumentParser) -> None:
    """--methods, the methods and method sets to run."""
    parser.add_argument(
        "--methods",
        help="method names and sets (core, loss, gradient, all; see `mtlbench list`), comma-separated, "
        "e.g. core,imtl-g (default: core; the lite preset's own list)",
    )


def add_results(parser: argparse.ArgumentParser, several: bool = False) -> None:
    """--results, the SQLite results file (with `several`: one or more files or folders of them, read merged)."""
    if several:
        parser.add_argument(
            "--results",
            nargs="+",
            default=[DEFAULT_RESULTS],
            help=f"SQLite results file (default {DEFAULT_RESULTS}); several files, or folders of *.sqlite (one per "
            "shard or job), are merged in memory first (as `mtlbench merge` would)",
        )
        return
    parser.add_argument("--results", default=DEFAULT_RESULTS, help=f"SQLite results file (default {DEFAULT_RESULTS})")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """--quiet: no progress bars."""
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from(
    args: argparse.Namespace,
    options: dict[str, tuple] = TRAINING_OPTIONS,
    switches: dict[str, tuple] = TRAINING_SWITCHES,
) -> RunConfig:
    """Preset ← config file ← the options given on the command line."""
    layers = [(load_config_file(args.config), f"config file {args.config}")] if args.config else []
    given = {spec[0]: getattr(args, flag[2:].replace("-", "_")) for flag, spec in {**options, **switches}.items()}
    layers.append(({k: v for k, v in given.items() if v is not None}, COMMAND_LINE))
    return build_config(args.preset, layers)
