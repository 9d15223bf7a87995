"""Methods from other packages: an installed package's `mtlbench.methods` entry point is a method
of every command, without an edit to mtlbench; a broken plugin is one line."""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from mtlbench import plugins
from mtlbench.conformance import check_method
from mtlbench.errors import UserError
from mtlbench.registry import METHODS
from tests.sweeps import run_cli, smoke_sweep

PLUGIN = '''
"""A user's method: weights ∝ L_t^power, scaled to sum to T."""
from dataclasses import dataclass

import torch

from mtlbench.errors import UserError
from mtlbench.methods.base import Method, StepOutput


@dataclass
class PowerParams:
    power: float = 1.0

    def check(self, method, task_names):
        if not 0 <= self.power <= 4:
            raise UserError(f"{method}: power must lie in [0, 4], got {self.power!r}")


class LossPower(Method):
    description = "Weights proportional to L_t^power (a plugin)."
    Params = PowerParams
    syncs_host = False

    def step(self, ctx):
        w = ctx.losses.detach().clamp_min(1e-8) ** self.params.power
        return StepOutput(weights=w * len(w) / w.sum())
'''


def install(site: Path, entry_points: str, module: str = PLUGIN) -> None:
    """What `pip install` leaves on disk for a one-module distribution: the module and its dist-info."""
    (site / "mtlbench_demo_plugin.py").write_text(textwrap.dedent(module))
    info = site / "mtlbench_demo_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mtlbench-demo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[mtlbench.methods]\n{entry_points}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """A folder on sys.path (in this process and its children) to install plugins into."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr(METHODS, "entries", dict(METHODS.entries))  # plugins registered here are forgotten after
    plugins.scan_plugins.cache_clear()
    yield folder
    plugins.scan_plugins.cache_clear()
    sys.modules.pop("mtlbench_demo_plugin", None)


@pytest.mark.slow  # a real sweep, several processes or a kill: `python -m pytest -m slow`
def test_an_installed_plugin_is_listed_checked_and_runs(site: Path, tmp_path: Path) -> None:
    install(site, "loss-power = mtlbench_demo_plugin:LossPower")
    cls = METHODS.get("loss-power")
    assert cls.name == "loss-power" and "loss-power" in METHODS.names()
    check_method(cls)  # the conformance check covers a plugin as it covers a built-in

    listed = run_cli(["list"], cwd=tmp_path)
    assert listed.returncode == 0 and "loss-power" in listed.stdout and "power = 1.0" in listed.stdout

    bad = run_cli("run --methods loss-power --param loss-power.power=9 --results x.sqlite".split(), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "power must lie in [0, 4]" in bad.stderr, bad.stderr
    assert not (tmp_path / "x.sqlite").exists()

    results = tmp_path / "r.sqlite"
    done = run_cli(smoke_sweep("ew,loss-power", results, tmp_path / "data", epochs=1), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(results) as con:
        rows = con.execute("SELECT method, status FROM runs ORDER BY run_id").fetchall()
    assert rows == [("ew", "complete"), ("loss-power", "complete")]


def test_all_includes_installed_plugins_after_the_built_ins(site: Path) -> None:
    from mtlbench.plan import parse_methods

    install(site, "loss-power = mtlbench_demo_plugin:LossPower")
    names = parse_methods("all")
    assert names[-1] == "loss-power" and names[0] == "ew"


@pytest.mark.parametrize(
    "entry, module, wanted",
    [
        ("broken = mtlbench_demo_plugin:LossPower", "import no_such_module\n", "failed to load: ModuleNotFoundError"),
        ("broken = mtlbench_demo_plugin:Thing", "class Thing:\n    pass\n", "is not a subclass of"),
        ("ew = mtlbench_demo_plugin:LossPower", PLUGIN, "has the name of a built-in method"),
        ("Broken,Name = mtlbench_demo_plugin:LossPower", PLUGIN, "a name must be lower-case letters"),
    ],
)
def test_a_broken_plugin_is_one_line_where_it_is_named(
    site: Path, tmp_path: Path, entry: str, module: str, wanted: str, capsys
) -> None:
    """In this process (the slow test above runs a plugin through child processes)."""
    from mtlbench.cli import main

    install(site, entry, module)
    name = entry.split(" = ")[0]
    assert wanted in plugins.plugin_problem(name) and name not in plugins.plugin_methods()
    if name != "ew" and plugins.NAME_PATTERN.fullmatch(name):  # a name --methods can carry
        with pytest.raises(UserError, match=wanted):
            METHODS.get(name)
        capsys.readouterr()
        code = main(["run", "--methods", name, "--results", str(tmp_path / "x.sqlite")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and wanted in err, err
        assert not (tmp_path / "x.sqlite").exists()
    assert main(["list"]) == 0  # the other methods are still listed, and the problem is named
    out = capsys.readouterr().out
    assert "gradnorm" in out and wanted in out, out


def test_one_broken_plugin_leaves_the_others_working(site: Path) -> None:
    install(site, "loss-power = mtlbench_demo_plugin:LossPower\nbroken = mtlbench_demo_plugin:Missing")
    assert "loss-power" in METHODS.names() and "broken" not in METHODS.names()
    assert "has no attribute 'Missing'" in plugins.plugin_problem("broken")
    from mtlbench.config import RunConfig

    stored = RunConfig(method="loss-power").resolved()  # its identity is resolved as usual
    assert stored["method_params"] == {"power": 1.0} and stored["method_version"] == 1


def test_built_in_names_never_load_plugins(site: Path, tmp_path: Path) -> None:
    """A broken plugin does not stop a sweep of built-in methods (plugins load only for other names)."""
    install(site, "broken = mtlbench_demo_plugin:X", "raise RuntimeError('boom')\n")
    run = run_cli(
        ["run", "--methods", "ew", "--param", "ew.x=1", "--results", str(tmp_path / "x.sqlite")], cwd=tmp_path
    )
    assert run.returncode == 2 and "boom" not in run.stderr and "unknown hyperparameter x for ew" in run.stderr
