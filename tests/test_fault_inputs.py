"""Hostile and bad inputs, end to end through `mtlbench.cli.main`.

Every fault must end the command with exit code 2 and exactly one line on stderr that starts
`mtlbench: error: ` and says what is wrong and where, with no traceback; and it must leave nothing
a later run would trust: no results database, no image cache marked complete (the one exception
is a cache that records an unreadable file as unreadable; see test_truncated_png_stops_naming_the_file).
All of them fail before training starts. The case ids below are the names the docs list.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from mtlbench.cli import main
from mtlbench.commands.options import DATA_OPTIONS, RUN_OPTIONS
from mtlbench.config import NOT_FROM_FILE, RunConfig
from mtlbench.hyperparams import field_types
from mtlbench.methods.params import METHOD_SPECS
from mtlbench.plan import method_sets
from mtlbench.datasets import image_cache
from tests.dataset_fixtures import DATA_ENTRY_FAULTS, break_data_entry, truncate, write_nih_download, write_npz

PREFIX = "mtlbench: error: "
SMOKE_NATIVE = 64  # --preset smoke is 32 px, read from chestmnist_64.npz


def run_cli(tmp_path: Path, capsys, *argv: str, command: tuple[str, ...] = ("run",)) -> tuple[int, str]:
    """main([...]) with --quiet and --preset smoke; results go to <tmp>/r.sqlite for `run`."""
    extra = ["--results", str(tmp_path / "r.sqlite"), "--methods", "ew"] if command == ("run",) else []
    capsys.readouterr()
    code = main([*command, "--quiet", "--preset", "smoke", *extra, *argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 2 and one `mtlbench: error: ` line holding every needle; returns the line."""
    assert code == 2, err
    assert err.startswith(PREFIX) and err.count("\n") == 1 and err.endswith("\n"), repr(err)
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err.rstrip("\n")


def complete_caches(root: Path) -> list[Path]:
    """Cache folders under `root` whose manifest says "complete" (what a later run would read)."""
    out = []
    for manifest in root.rglob(image_cache.MANIFEST):
        try:
            state = json.loads(manifest.read_text()).get("state")
        except (OSError, ValueError):
            continue
        if state == "complete":
            out.append(manifest.parent)
    return out


def assert_nothing_trusted(tmp_path: Path) -> None:
    assert not (tmp_path / "r.sqlite").exists()
    assert not list(tmp_path.glob("r.sqlite*")), "results database files left behind"
    assert complete_caches(tmp_path) == []


# ----------------------------------------------------------------------------- --config files

CONFIG_FAULTS = {
    "config-invalid-json": (
        '{\n  "epochs": 1,\n  "lr": 0.01,,\n  "batch_size": 8\n}\n',
        ["is not valid JSON (line 3, column 14: "],
    ),
    "config-json-list": ('["epochs", 1]\n', ["must hold a JSON object of settings", "got a list"]),
    "config-unknown-setting": ('{"epoch": 1}\n', ["unknown setting(s) epoch", "did you mean epochs?"]),
    "config-wrong-type": ('{"epochs": "two"}\n', ["epochs must be int, got 'two'"]),
    "config-not-text": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", ["is not a UTF-8 text file"]),
    # settings the sweep sets per run: silently ignored before (seed 7 stored as seed 0)
    "config-sets-seed": ('{"seed": 7}\n', ["seed cannot be set in a config file; use --seeds"]),
    "config-sets-method": ('{"method": "mgda"}\n', ["method cannot be set in a config file; use --methods"]),
    "config-sets-method-params": (
        '{"method_params": {"std": 2}}\n',
        ["method_params cannot be set in a config file; use --param METHOD.NAME=VALUE"],
    ),
    "config-sets-data-fingerprint": (
        '{"data_fingerprint": "x"}\n',
        ["data_fingerprint cannot be set in a config file"],
    ),
    # NaN passed every range check before (the run was stored as diverged)
    "config-nan": ('{"normalize_mean": NaN}\n', ["normalize_mean must be a finite number, got nan"]),
}


@pytest.mark.parametrize("command", [("run",), ("data", "prepare")], ids=["run", "data-prepare"])
@pytest.mark.parametrize("case", list(CONFIG_FAULTS))
def test_bad_config_file(case: str, command, tmp_path: Path, capsys) -> None:
    content, needles = CONFIG_FAULTS[case]
    config = tmp_path / "settings.json"
    config.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, err = run_cli(
        tmp_path, capsys, "--config", str(config), "--data-dir", str(tmp_path / "data"), command=command
    )
    assert_one_line_error(code, err, f"config file {config}", *needles)
    assert_nothing_trusted(tmp_path)
    assert not (tmp_path / "data").exists(), "a bad config must fail before any data is generated"


# ----------------------------------------------------------------------------- nih-cxr14 download


@pytest.fixture(scope="module")
def nih(tmp_path_factory):
    """A pristine flat NIH download (120 images); tests damage a copy of it."""
    return write_nih_download(tmp_path_factory.mktemp("nih") / "flat")


def copy_of(download, tmp_path: Path) -> Path:
    root = tmp_path / "nih"
    shutil.copytree(download.root, root, ignore=shutil.ignore_patterns("mtlbench-cache"))
    return root


RESTORE = "restore it from the NIH ChestX-ray14 download"
CSV_NEEDLES = {  # row 3 of the data is line 5 of the file
    "unknown-label": [
        "unknown finding label 'Covid-19'",
        "(line 5, 'Pneumonia|Covid-19')",
        "known: No Finding, Atelectasis",
        "correct or remove that row",
    ],
    "blank-finding-labels": [
        "has 1 row(s) with an empty 'Finding Labels', the first on line 5",
        "write 'No Finding' for an image without findings",
        RESTORE,
    ],
    "no-finding-labels-column": ["lacks column(s) 'Finding Labels' (its header has 'Image Index', ", RESTORE],
    "no-patient-id-column": ["lacks column(s) 'Patient ID' (its header has 'Image Index', ", RESTORE],
    "ragged-row": ["cannot parse", "as CSV (", "in line 5", RESTORE],
    "header-only": ["has a header but no rows", RESTORE],
    "empty": ["is empty (no header, no rows)", RESTORE],
    "binary": ["is not a UTF-8 CSV text file (byte 0x", "on line 1 is not UTF-8)", RESTORE],
}
assert set(CSV_NEEDLES) == set(DATA_ENTRY_FAULTS)


@pytest.mark.parametrize("command", [("run",), ("data", "prepare")], ids=["run", "data-prepare"])
@pytest.mark.parametrize("fault", DATA_ENTRY_FAULTS, ids=[f"nih-csv-{f}" for f in DATA_ENTRY_FAULTS])
def test_broken_nih_metadata_csv(fault: str, command, nih, tmp_path: Path, capsys) -> None:
    root = copy_of(nih, tmp_path)
    path = break_data_entry(root, fault)
    code, err = run_cli(tmp_path, capsys, "--dataset", "nih-cxr14", "--data-dir", str(root), command=command)
    line = assert_one_line_error(code, err, *CSV_NEEDLES[fault])
    assert str(path) in line
    assert_nothing_trusted(tmp_path)
    assert not (root / "mtlbench-cache").exists(), "the CSV is checked before any image is decoded"


@pytest.mark.parametrize("command", [("run",), ("data", "prepare")], ids=["run", "data-prepare"])
def test_truncated_png_stops_naming_the_file(command, nih, tmp_path: Path, capsys) -> None:
    """Without --allow-missing a truncated PNG stops the command and names the file.

    The cache the command built is complete and records that file as unreadable (status and reason):
    that is a true statement about the current files, which a later `run --allow-missing` reuses; its
    fingerprint covers file sizes, so a re-downloaded file gets a fresh cache. The file's pixels are
    never trusted.
    """
    root = copy_of(nih, tmp_path)
    broken = nih.train_val[7]
    truncate(root / "images" / broken)
    code, err = run_cli(tmp_path, capsys, "--dataset", "nih-cxr14", "--data-dir", str(root), command=command)
    assert_one_line_error(
        code, err, "nih-cxr14: 1 image file(s) cannot be read: ", broken, "replace them or pass --allow-missing"
    )
    assert not (tmp_path / "r.sqlite").exists()
    [folder] = complete_caches(tmp_path)
    names = (folder / image_cache.NAMES).read_text().splitlines()
    assert np.load(folder / image_cache.STATUS)[names.index(broken)] == image_cache.UNREADABLE
    assert "truncated" in json.loads((folder / image_cache.ERRORS).read_text())[broken]
    # a second run reads that cache and still refuses the file
    code, err = run_cli(tmp_path, capsys, "--dataset", "nih-cxr14", "--data-dir", str(root))
    assert_one_line_error(code, err, f"cannot be read: {broken} (")
    assert not (tmp_path / "r.sqlite").exists()


# ----------------------------------------------------------------------------- chestmnist npz

N = {"train": 30, "val": 8, "test": 12}
S = SMOKE_NATIVE


def npz_fault(folder: Path, fault: str) -> Path:
    """Write chestmnist_64.npz into `folder` with one fault."""
    replace = {
        "npz-missing-labels-key": dict(val_labels=None),
        "npz-missing-images-key": dict(train_images=None),
        # e.g. a Keras-style x_train / y_train file under the expected name
        "npz-foreign-keys": {
            **{f"{s}_{k}": None for s in N for k in ("images", "labels")},
            "x_train": np.zeros((4, S, S), np.uint8),
            "y_train": np.zeros((4, 14), np.uint8),
        },
        "npz-rgb-images": dict(train_images=np.zeros((N["train"], S, S, 3), np.uint8)),
        "npz-wrong-image-size": dict(val_images=np.zeros((N["val"], 28, 28), np.uint8)),
        "npz-float-images": dict(test_images=np.zeros((N["test"], S, S), np.float32)),
        "npz-image-count-mismatch": dict(train_images=np.zeros((N["train"] - 1, S, S), np.uint8)),
        "npz-label-columns": dict(test_labels=np.zeros((N["test"], 5), np.uint8)),
        "npz-labels-not-binary": dict(train_labels=np.full((N["train"], 14), 2, np.uint8)),
        "npz-empty-val-split": dict(val_images=np.zeros((0, S, S), np.uint8), val_labels=np.zeros((0, 14), np.uint8)),
    }
    if fault in replace:
        return write_npz(folder, S, **replace[fault])
    if fault == "npz-not-a-zip":  # e.g. a proxy's error page saved under the file's name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "chestmnist_64.npz"
        path.write_text("<html><body>404 Not Found</body></html>\n")
        return path
    path = write_npz(folder, S)
    if fault == "npz-truncated-download":
        truncate(path)
    elif fault == "npz-corrupt-images-member":  # damaged bytes inside train_images.npy, headers intact
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("train_images.npy")
        data = bytearray(path.read_bytes())
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)  # local header, then the data
        middle = start + info.compress_size // 2
        data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
        path.write_bytes(bytes(data))
    else:
        raise ValueError(fault)
    return path


REDOWNLOAD = "delete it and download it again (--download)"
NPZ_NEEDLES = {
    "npz-missing-labels-key": ["has no 'val_labels'", "is it a ChestMNIST file?"],
    "npz-missing-images-key": ["has no 'train_images'", "is it a ChestMNIST file?"],
    "npz-foreign-keys": ["has no 'train_images' (keys: x_train, y_train)", "is it a ChestMNIST file?"],
    "npz-rgb-images": ["holds train_images of uint8 (30, 64, 64, 3), expected uint8 (N, 64, 64)"],
    "npz-wrong-image-size": ["holds val_images of uint8 (8, 28, 28), expected uint8 (N, 64, 64)"],
    "npz-float-images": ["holds test_images of float32 (12, 64, 64), expected uint8 (N, 64, 64)"],
    "npz-image-count-mismatch": ["holds 29 train_images but 30 train_labels", REDOWNLOAD],
    "npz-label-columns": ["test_labels has shape (12, 5); expected (N, 14) of 0/1"],
    "npz-labels-not-binary": ["train_labels holds the value 2 where only 0 and 1 belong"],
    "npz-empty-val-split": [
        "holds no val images (30 train, 0 val, 12 test); training needs all three splits",
        REDOWNLOAD,
    ],
    "npz-truncated-download": ["cannot read", "not a zip file", REDOWNLOAD],
    "npz-not-a-zip": ["cannot read", "not a zip file", REDOWNLOAD],
    "npz-corrupt-images-member": ["cannot read", "with medmnist", REDOWNLOAD],
}
# found only when the images are decompressed, i.e. while the cache is built: the cache is
# started (left "building", resumable, never read) but never marked complete
FOUND_WHILE_CACHING = {"npz-corrupt-images-member"}


@pytest.mark.parametrize("command", [("run",), ("data", "prepare")], ids=["run", "data-prepare"])
@pytest.mark.parametrize("fault", list(NPZ_NEEDLES))
def test_broken_chestmnist_npz(fault: str, command, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    path = npz_fault(data, fault)
    code, err = run_cli(tmp_path, capsys, "--dataset", "chestmnist", "--data-dir", str(data), command=command)
    line = assert_one_line_error(code, err, PREFIX + "chestmnist: ", str(path), *NPZ_NEEDLES[fault])
    assert line.count(str(path)) == 1
    assert_nothing_trusted(tmp_path)
    if fault not in FOUND_WHILE_CACHING:
        assert not (data / "mtlbench-cache").exists(), "the file is checked before any cache is started"


# ----------------------------------------------------------------------------- odd but usable data: warnings


@pytest.mark.parametrize("command", [("run",), ("data", "prepare")], ids=["run", "data-prepare"])
def test_odd_nih_data_is_said_before_training_on_stdout(command, nih, tmp_path: Path, capsys) -> None:
    """A repeated list entry, a link loop and a task without positives: warning lines, stderr kept for errors."""
    root = copy_of(nih, tmp_path)
    names = (root / "train_val_list.txt").read_text().splitlines()
    (root / "train_val_list.txt").write_text("\n".join([*names, names[0]]) + "\n")
    (root / "images" / "a.png").symlink_to("b.png")
    (root / "images" / "b.png").symlink_to("a.png")
    # `run` stops right after loading (a batch larger than the data): what it said before training is what counts
    extra = ("--batch-size", "60000") if command == ("run",) else ()
    capsys.readouterr()
    code = main(
        [
            *command,
            "--quiet",
            "--preset",
            "smoke",
            "--dataset",
            "nih-cxr14",
            "--data-dir",
            str(root),
            *extra,
            *(["--results", str(tmp_path / "r.sqlite"), "--methods", "ew"] if command == ("run",) else []),
        ]
    )
    out, err = capsys.readouterr()
    if command == ("run",):
        assert_one_line_error(code, err, "--batch-size 60000 is larger than the")
    else:
        assert code == 0 and err == ""
    warnings = [line for line in out.splitlines() if line.startswith("warning: ")]
    assert any(f"train_val_list.txt lists 1 image(s) more than once, e.g. {names[0]!r}" in w for w in warnings), out
    assert any("skipped 2 link(s) under" in w for w in warnings), out
    assert any(w.startswith("warning: nih-cxr14: the val split (") and "no positive" in w for w in warnings), out


# ----------------------------------------------------------------------------- numbers must be finite

NUMERIC_FIELDS = [
    f.name
    for f in fields(RunConfig)
    if type(getattr(RunConfig(), f.name)) in (int, float) and f.name not in NOT_FROM_FILE
]
FLAG_OF = {spec[0]: flag for flag, spec in {**DATA_OPTIONS, **RUN_OPTIONS}.items()}
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # command-line text → JSON literal


@pytest.mark.parametrize("text", list(NON_FINITE))
@pytest.mark.parametrize("name", NUMERIC_FIELDS)
def test_every_numeric_setting_must_be_finite(name: str, text: str, tmp_path: Path, capsys) -> None:
    """Each numeric RunConfig field, NaN or ±infinity, from a config file and (where there is one) its flag."""
    config = tmp_path / "settings.json"
    config.write_text(f'{{"{name}": {NON_FINITE[text]}}}\n')
    code, err = run_cli(tmp_path, capsys, "--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, f"config file {config}: {name} must be ")
    if name in FLAG_OF:
        code, err = run_cli(tmp_path, capsys, f"{FLAG_OF[name]}={text}", "--data-dir", str(tmp_path / "data"))
        assert_one_line_error(code, err, FLAG_OF[name], text)
    assert_nothing_trusted(tmp_path)
    assert not (tmp_path / "data").exists()


def test_integer_too_large_for_a_float_is_refused(tmp_path: Path, capsys) -> None:
    config = tmp_path / "settings.json"
    config.write_text('{"lr": 1' + "0" * 400 + "}\n")
    code, err = run_cli(tmp_path, capsys, "--config", str(config))
    assert_one_line_error(code, err, "lr must be a finite number, got a number too large for a float")


# ----------------------------------------------------------------------------- --param

PARAM_FAULTS = {
    # ew used to train completely before mgda's hyperparameters were looked at
    "param-checked-only-when-its-run-starts": (
        ["--methods", "ew,mgda", "--param", "mgda.normalization=banana"],
        ["mgda: unknown normalization 'banana'; valid: none, l2, loss, loss+"],
    ),
    # these three ended in TypeError tracebacks (exit 1)
    "param-word-for-a-number": (
        ["--methods", "ew,gradnorm", "--param", "gradnorm.alpha=high"],
        ["gradnorm.alpha must be a number, got 'high'", "e.g. --param gradnorm.alpha=1.5"],
    ),
    "param-nan": (
        ["--methods", "ew,gradnorm", "--param", "gradnorm.alpha=nan"],
        ["gradnorm.alpha must be a finite number", "got nan"],
    ),
    "param-list-for-a-number": (
        ["--methods", "ew,cagrad", "--param", "cagrad.c=[1,2]"],
        ["cagrad.c must be a number, got [1, 2]"],
    ),
    # silently ignored before
    "param-for-a-method-not-in-the-sweep": (
        ["--methods", "ew", "--param", "mgda.normalization=l2"],
        ["--param mgda.normalization=l2: mgda is not in --methods (ew)", "add it to --methods or drop this --param"],
    ),
    "param-mistyped-method": (
        ["--param", "mgad.normalization=l2"],
        ["--param mgad.normalization=l2: unknown method 'mgad' (did you mean mgda?)"],
    ),
    "param-mistyped-name": (
        ["--methods", "gradnorm", "--param", "gradnorm.alpah=1"],
        ["unknown hyperparameter alpah for gradnorm (did you mean alpha?)"],
    ),
    "methods-mistyped": (["--methods", "ew,mgad"], ["unknown method 'mgad' (did you mean mgda?)"]),
}


@pytest.mark.parametrize("case", list(PARAM_FAULTS))
def test_bad_method_hyperparameter(case: str, tmp_path: Path, capsys) -> None:
    argv, needles = PARAM_FAULTS[case]
    code, err = run_cli(tmp_path, capsys, *argv, "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, *needles)
    assert_nothing_trusted(tmp_path)
    assert not (tmp_path / "data").exists(), "hyperparameters are checked before any data is generated"


HYPERPARAMETERS = [
    (m, f.name, hint)
    for m, spec in METHOD_SPECS.items()
    if m != "mgda-ub"
    for f in fields(spec.Params)
    for hint in [field_types(spec.Params)[f.name]]
]
NUMERIC = [(m, name) for m, name, hint in HYPERPARAMETERS if hint in (int, float)]
OTHER = [(m, name) for m, name, hint in HYPERPARAMETERS if hint not in (int, float)]


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "high", "[1,2]", "true"])
@pytest.mark.parametrize("method, name", NUMERIC, ids=[f"{m}.{n}" for m, n in NUMERIC])
def test_every_numeric_hyperparameter_is_typed_and_finite(
    method: str, name: str, value: str, tmp_path: Path, capsys
) -> None:
    code, err = run_cli(tmp_path, capsys, "--methods", f"ew,{method}", "--param", f"{method}.{name}={value}")
    assert_one_line_error(code, err, f"{method}.{name} must be a ")
    assert_nothing_trusted(tmp_path)


@pytest.mark.parametrize("method, name", OTHER, ids=[f"{m}.{n}" for m, n in OTHER])
def test_every_other_hyperparameter_is_checked_up_front(method: str, name: str, tmp_path: Path, capsys) -> None:
    """Choices and files: each method's own check runs before the sweep's first run."""
    code, err = run_cli(tmp_path, capsys, "--methods", f"ew,{method}", "--param", f"{method}.{name}=banana")
    assert_one_line_error(code, err, f"{method}", "banana")
    assert_nothing_trusted(tmp_path)


# ----------------------------------------------------------------------------- --seeds

ALL = method_sets()["all"]  # what `--methods all` runs
SEED_FAULTS = {
    # built a list of 2^31 seeds and died with MemoryError
    "seeds-huge-range": (
        ["--seeds", "0-2147483647"],
        ["--seeds '0-2147483647' names 2,147,483,648 seeds", "at most 10,000 runs (methods × seeds)"],
    ),
    "seeds-too-many-runs": (
        ["--methods", "all", "--seeds", "0-999"],
        [f"--methods × --seeds is {len(ALL)} × 1,000 = {len(ALL) * 1000:,} runs", "at most 10,000"],
    ),
    # said "empty"
    "seeds-reversed-range": (["--seeds", "5-2"], ["--seeds '5-2': the range 5-2 is reversed; write 2-5"]),
}


@pytest.mark.parametrize("case", list(SEED_FAULTS))
def test_bad_seeds(case: str, tmp_path: Path, capsys) -> None:
    argv, needles = SEED_FAULTS[case]
    code, err = run_cli(tmp_path, capsys, *argv, "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, *needles)
    assert_nothing_trusted(tmp_path)
    assert not (tmp_path / "data").exists()


def test_config_file_with_a_byte_order_mark_is_read(tmp_path: Path, capsys) -> None:
    """A UTF-8 BOM (as Windows editors write) is accepted: the file's settings apply (here one out of range)."""
    config = tmp_path / "settings.json"
    config.write_bytes(b'\xef\xbb\xbf{"epochs": 0}\n')
    code, err = run_cli(tmp_path, capsys, "--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert_one_line_error(code, err, "--epochs must be between 1 and 10000, got 0")
    assert_nothing_trusted(tmp_path)
