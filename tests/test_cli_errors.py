"""`mtlbench` user errors: one line on stderr, exit code 2, no traceback, nothing written."""

import json
import subprocess
import sys

import pytest

import mtlbench
from mtlbench.cli import main


def _paths(tmp_path) -> list[str]:
    """Where a test's run writes: its results database and its data folder, both under tmp_path."""
    return ["--results", str(tmp_path / "r.sqlite"), "--data-dir", str(tmp_path / "data")]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--methods", "ew,nope"], "unknown method 'nope'; valid methods: "),
        (["run", "--methods", ""], "--methods is empty"),
        (["run", "--seeds", "a,b"], "--seeds 'a,b': expected integers"),
        (["run", "--seeds", "-3"], "--seeds: -3 is out of range"),
        (["run", "--epochs", "0"], "--epochs must be between 1"),
        (["run", "--epochs", "two"], "argument --epochs: invalid int value"),
        (["run", "--batch-size", "1"], "--batch-size must be between 2"),
        (["run", "--image-size", "4"], "--image-size must be between 16"),
        (["run", "--preset", "huge"], "unknown --preset 'huge'; valid: smoke, quick, lite, paper"),
        (
            ["run", "--param", "deepchest.bogus=1"],
            "--param deepchest.bogus=1: unknown hyperparameter bogus for deepchest",
        ),
        (["run", "--param", "nonsense"], "expected METHOD.NAME=VALUE"),
        (["run", "--config", "/nonexistent/c.json"], "config file not found"),
        (
            ["run", "--freeze-trunk", "--methods", "ew,pcgrad,mgda-ub"],
            "--freeze-trunk leaves no shared gradient for the gradient method(s) pcgrad, mgda-ub",
        ),
        (
            ["run", "--compile", "--methods", "ew,mgda"],
            "--compile supports loss-weighting methods only: the gradient method(s) mgda",
        ),
        (["run", "--precision", "tf32", "--device", "cpu"], "--precision tf32 is a CUDA tensor-core mode"),
        (["run", "--precision", "fp16"], "unknown --precision 'fp16'; valid: auto, fp32, tf32, bf16"),
        (["run", "--grad-engine", "fast"], "unknown --grad-engine 'fast'; valid: auto, batched, loop"),
        (["bogus"], "invalid choice"),
        (["export", "--results", "/nonexistent/r.sqlite"], "no results database at /nonexistent/r.sqlite"),
    ],
)
def test_user_errors(argv, message, capsys, tmp_path):
    code = main(argv + (["--results", str(tmp_path / "r.sqlite")] if argv[0] == "run" else []))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert err.startswith("mtlbench: error: ") and err.count("\n") == 1
    assert not (tmp_path / "r.sqlite").exists()


@pytest.mark.parametrize(
    "dataset, message",
    [
        ("nope", "unknown dataset 'nope'; valid datasets: cxr14-synth, "),
        ("nih-cxr14", "does not exist; pass --data-dir pointing to the NIH ChestX-ray14 download"),
        ("chestmnist", "chestmnist_64.npz not found (used for --image-size 32, area-resized)"),
    ],
)
def test_dataset_errors(dataset, message, capsys, tmp_path):
    code = main(["run", *f"--dataset {dataset} --preset smoke --quiet".split(), *_paths(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_data_dir_that_is_a_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    code = main(["run", "--preset", "smoke", "--quiet", "--data-dir", str(f), "--results", str(tmp_path / "r.sqlite")])
    assert code == 2 and f"--data-dir {f} is not a directory" in capsys.readouterr().err


def test_device_cuda_without_gpu(capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["run", "--device", "cuda", "--preset", "smoke", "--results", str(tmp_path / "r.sqlite")])
    assert code == 2 and "no CUDA device" in capsys.readouterr().err


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mtlbench.cli", "run", "--methods", "nope", "--results", str(tmp_path / "r.sqlite")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip().startswith("mtlbench: error: unknown method")


def test_list_shows_methods_hyperparameters_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in (
        "ew",
        "deepchest",
        "increase_factor = 1.1",
        "max_weight = 1.5",
        "decay_factor = 1.05",
        "signal = 'train-accuracy'",
        "cxr14-synth",
        "smoke",
        "quick",
        "paper",
    ):
        assert text in out, text


def test_pretrained_weights_unavailable(capsys, tmp_path, monkeypatch):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # empty cache
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)  # and no network
    code = main(["run", *"--pretrained imagenet --preset smoke --quiet".split(), *_paths(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "could not load the ImageNet resnet18 weights" in err and "hub/checkpoints" in err
    assert not (tmp_path / "r.sqlite").exists()


def test_unwritable_data_dir(capsys, tmp_path):
    import os

    if os.geteuid() == 0:
        target = "/proc/mtlbench-data"  # not writable even by root
    else:
        target = str(tmp_path / "ro")
        os.mkdir(target, 0o500)
    code = main(["run", "--preset", "smoke", "--quiet", "--data-dir", target, "--results", str(tmp_path / "r.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write the synthetic dataset under {target}" in err, err
    assert not (tmp_path / "r.sqlite").exists()


TORCH_FREE_FAULTS = [
    ["run", "--epochs", "two"],
    ["run", "--lr", "nan"],
    ["run", "--config", "{config}"],
    ["run", "--methods", "ew,mgad"],
    ["run", "--seeds", "5-2"],
    ["run", "--seeds", "0-2147483647"],
    ["run", "--methods", "ew,mgda", "--param", "mgda.normalization=banana"],
    ["run", "--param", "gradnorm.alpha=nan"],
    ["run", "--methods", "ew", "--param", "mgda.normalization=l2"],
    ["run", "--param", "deepchest.init_weights_file=/nonexistent/w.json"],
    ["run", "--compile", "--methods", "ew,mgda"],
    ["data", "prepare", "--val-fraction", "inf"],
]


def test_input_errors_come_before_torch_is_imported(tmp_path):
    """Every check that needs no torch runs before torch is imported: a bad input is one line at once."""
    config = tmp_path / "c.json"
    config.write_text('{"seed": 7}')
    script = (
        "import sys, json\n"
        "from mtlbench.cli import main\n"
        "out = []\n"
        f"for argv in {TORCH_FREE_FAULTS!r}:\n"
        f"    argv = [a.replace('{{config}}', {str(config)!r}) for a in argv]\n"
        f"    extra = ['--results', {str(tmp_path / 'r.sqlite')!r}] if argv[0] == 'run' else []\n"
        "    out.append([main(argv + extra), 'torch' in sys.modules])\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [[2, False]] * len(TORCH_FREE_FAULTS), proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == len(TORCH_FREE_FAULTS) and all(line.startswith("mtlbench: error: ") for line in lines)
    assert not (tmp_path / "r.sqlite").exists() and not (tmp_path / "data").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"mtlbench {mtlbench.__version__}\n"


def test_torch_free_method_specs_match_the_registry():
    """The specs the CLI checks before torch (METHOD_SPECS, then the plugins' — the torchjd adapters' without
    importing them) list every registered method, in order, as registered."""
    from mtlbench.hyperparams import all_method_specs
    from mtlbench.registry import METHODS

    specs = all_method_specs()
    assert list(specs) == METHODS.names()
    for name, spec in specs.items():
        cls = METHODS.get(name)
        assert (cls.needs, cls.Params, cls.weight_scale, cls.syncs_host, cls.version) == tuple(spec)
        assert cls.name == name


def test_a_registered_class_takes_its_declaration_from_its_spec_and_may_not_restate_it(monkeypatch):
    from mtlbench.methods.base import Method
    from mtlbench.methods.params import METHOD_SPECS, MethodSpec, NoHyperparameters
    from mtlbench.registry import METHODS, register_method

    monkeypatch.setattr(METHODS, "entries", dict(METHODS.entries))  # the test's registrations go with it
    spec = MethodSpec("shared_params", NoHyperparameters, "none", syncs_host=False, version=3)
    monkeypatch.setitem(METHOD_SPECS, "spec-test", spec)

    @register_method("spec-test")
    class Declared(Method):
        pass

    assert (Declared.needs, Declared.Params, Declared.weight_scale, Declared.syncs_host, Declared.version) == spec
    with pytest.raises(ValueError, match=r"'spec-test' restates syncs_host, weight_scale: they belong to its"):

        @register_method("spec-test")
        class Restated(Method):
            weight_scale = "none"
            syncs_host = False

    with pytest.raises(ValueError, match=r"'no-spec' needs an entry MethodSpec"):
        register_method("no-spec")(type("NoSpec", (Method,), {}))


def test_registries_list_in_catalog_order_whatever_was_imported_first() -> None:
    """A module imported before the catalog (a test, a plugin) does not reorder `--methods all` or
    the datasets' listing."""
    import subprocess
    import sys

    from mtlbench.registry import METHODS

    code = (
        "import mtlbench.datasets.chestmnist, mtlbench.methods.graddrop; from mtlbench.registry import DATASETS, "
        "METHODS; print(DATASETS.names()[0], METHODS.names()[0], METHODS.names()[-1])\n"
        "try:\n    DATASETS.get('nope')\nexcept Exception as exc:\n    print(str(exc).split('valid datasets: ')[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [
        f"cxr14-synth ew {METHODS.names()[-1]}",
        "cxr14-synth, nih-cxr14, chestmnist, chexpert, chexpert-synth, mimic-cxr, padchest, padchest-synth",
    ]
