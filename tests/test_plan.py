"""`--methods`: names and named sets (core, loss, gradient, all), checked before torch is imported."""

from __future__ import annotations

import pytest

from mtlbench.errors import UserError
from mtlbench.hyperparams import all_method_specs
from mtlbench.methods.params import CORE_SPECS
from mtlbench.plan import METHOD_SET_HELP, method_sets, parse_methods


def test_the_sets_partition_all_methods_by_their_need_and_core_is_the_first_thirteen():
    sets = method_sets()
    specs = all_method_specs()
    assert sets["all"] == tuple(n for n in specs if not n.startswith("jd-") and n != "stl")  # stl: `run --stl`
    assert sets["torchjd"] == tuple(n for n in specs if n.startswith("jd-"))
    assert set(sets["loss"]) | set(sets["gradient"]) == set(sets["all"])
    assert not set(sets["loss"]) & set(sets["gradient"])
    assert all(specs[m].needs == "losses" for m in sets["loss"])
    assert sets["core"] == tuple(CORE_SPECS) and len(sets["core"]) == 13
    assert list(METHOD_SET_HELP) == list(sets)


def test_names_and_sets_mix_in_order_without_duplicates():
    sets = method_sets()
    assert parse_methods("core") == sets["core"]
    assert parse_methods("pcgrad, loss") == ("pcgrad", *sets["loss"])
    assert parse_methods("ew,ew,core")[:2] == ("ew", "deepchest")


def test_an_unknown_name_lists_the_methods_and_the_sets():
    with pytest.raises(UserError, match=r"unknown method 'nope'.*; sets: core, loss, gradient, all, torchjd$"):
        parse_methods("core,nope")
    with pytest.raises(UserError, match="--methods is empty"):
        parse_methods(" , ")


def test_stch_warns_when_the_protocol_never_leaves_its_warm_up():
    from dataclasses import replace

    from mtlbench.config import build_config
    from mtlbench.plan import protocol_warnings

    quick = build_config("quick")  # 3 epochs: STCH's default warm-up is epochs 0 … 4
    (line,) = protocol_warnings(quick, ("ew", "stch"), {})
    assert line.startswith("stch: with --epochs 3 and warmup_epochs=4, STCH never leaves its warm-up")
    assert line.endswith("give --epochs ≥ 6 or --param stch.warmup_epochs=1")
    assert protocol_warnings(quick, ("stch",), {"stch": {"warmup_epochs": 1}}) == []
    assert protocol_warnings(replace(quick, epochs=6), ("stch",), {}) == []
    assert protocol_warnings(quick, ("ew",), {}) == []


def test_dwa_warns_when_at_most_its_last_epoch_differs_from_ew():
    """DWA's weights are 1 in its first two epochs: with 3 epochs a model selected at epoch 2 is EW's own."""
    from dataclasses import replace

    from mtlbench.config import build_config
    from mtlbench.plan import protocol_warnings

    quick = build_config("quick")
    (line,) = protocol_warnings(quick, ("ew", "dwa"), {})
    assert line.startswith("dwa: its first two epochs are equal weighting, so with --epochs 3 only the last epoch")
    assert line.endswith("give --epochs ≥ 4 to compare DWA with EW")
    (line,) = protocol_warnings(replace(quick, epochs=2), ("dwa",), {})
    assert "with --epochs 2 it is EW throughout" in line
    assert protocol_warnings(replace(quick, epochs=4), ("dwa",), {}) == []


def test_the_authors_presets_method_settings_apply_unless_param_sets_them():
    from mtlbench.cli import build_parser
    from mtlbench.commands.run import plan_from

    def plan(*argv: str):
        return plan_from(build_parser().parse_args(["run", "--preset", "authors", *argv]))

    default = plan()
    assert list(default.methods) == ["ew", "deepchest", "uncertainty", "gradnorm-authors"]
    assert default.method_params == {"deepchest": {"init": "authors"}, "uncertainty": {"regularizer": 0.5}}
    mine = plan("--param", "deepchest.init=constant", "--methods", "ew,deepchest")
    assert mine.method_params == {"deepchest": {"init": "constant"}}  # no uncertainty.regularizer: not in the sweep
