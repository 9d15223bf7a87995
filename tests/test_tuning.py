"""Equal-budget tuning without training: declared search spaces, the trials' draw, the selection rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import pytest

from mtlbench.config import PRESETS, build_config
from mtlbench.errors import UserError
from mtlbench.hyperparams import check_params, make_params
from mtlbench.methods.params import METHOD_SPECS
from mtlbench.tuning import (
    SHARED_SPACE,
    Point,
    TrialOutcome,
    default_point,
    draw_order,
    plan_tune,
    search_space,
    select_trial,
    selection_blocker,
    trial_points,
)

BASE = build_config("smoke")


@pytest.mark.parametrize("method", list(METHOD_SPECS))
def test_every_declared_space_names_real_hyperparameters_with_values_the_method_accepts(method):
    spec = METHOD_SPECS[method]
    declared = spec.Params.search_space
    assert set(declared) <= {f.name for f in fields(spec.Params)}
    assert "search_space" not in {f.name for f in fields(spec.Params)}  # a ClassVar: no part of a run's identity
    for name, values in declared.items():
        assert values and len(set(values)) == len(values), name
        for value in values:
            check_params(make_params(spec.Params, {name: value}, method), method)


@pytest.mark.parametrize("method", list(METHOD_SPECS))
def test_the_defaults_are_a_point_of_every_space(method):
    """Trial 0 is what a plain `mtlbench run` trains, so tuning can only match or beat it on validation."""
    for preset in PRESETS:
        space = search_space(method)
        default = default_point(space, build_config(preset))
        assert space.index_of(default) is not None, (method, preset)
        assert trial_points(space, default, 3, 0)[0] == default


def test_space_is_the_shared_grid_then_the_methods_own():
    space = search_space("gradnorm")
    assert [(d.name, d.shared) for d in space.dimensions] == [
        ("lr", True),
        ("weight_decay", True),
        ("alpha", False),
        ("lr", False),
    ]
    assert space.size == 4 * 4 * 5 * 3
    point = space.point(0)
    assert point.config == {"lr": 1e-4, "weight_decay": 0.0} and point.method_params == {"alpha": 0.5, "lr": 0.005}
    assert point.label("gradnorm") == "lr=0.0001, weight_decay=0, alpha=0.5, gradnorm.lr=0.005"
    assert search_space("ew").size == len(SHARED_SPACE["lr"]) * len(SHARED_SPACE["weight_decay"])


def test_every_index_decodes_to_a_distinct_point_and_back():
    space = search_space("deepchest")
    seen = set()
    for i in range(space.size):
        point = space.point(i)
        assert space.index_of(point) == i
        seen.add(point.to_json())
    assert len(seen) == space.size
    assert space.index_of(Point({"lr": 0.5, "weight_decay": 0.0}, {})) is None


def test_settings_fixed_on_the_command_line_are_not_searched():
    space = search_space("cagrad", fixed_config=["lr"], fixed_params=["c"])
    assert [d.name for d in space.dimensions] == ["weight_decay"]
    plan = plan_tune(BASE, ["cagrad"], [0], 2, 7, {"cagrad": {"c": 0.7}}, fixed_config=["lr"])
    for cell in plan.trial_cells("cagrad"):
        assert cell.lr == BASE.lr and cell.method_params["c"] == 0.7 and cell.seed == 7


def test_an_empty_search_space_is_a_one_line_error():
    with pytest.raises(UserError, match=r"ew: nothing to tune: its search space is empty once --lr, --weight-decay"):
        search_space("ew", fixed_config=["lr", "weight_decay"])

    @dataclass
    class EmptyParams:
        power: float = 1.0
        search_space: ClassVar[dict] = {"power": ()}

    @dataclass
    class WrongParams:
        power: float = 1.0
        search_space: ClassVar[dict] = {"powr": (1.0, 2.0)}

    from mtlbench.methods.params import MethodSpec

    for params, message in (
        (EmptyParams, "the search space of power is empty"),
        (WrongParams, "unknown hyperparameter"),
    ):
        METHOD_SPECS["test-space"] = MethodSpec("losses", params, "sum-to-T")
        try:
            with pytest.raises(UserError, match=message) as info:
                search_space("test-space")
            assert "\n" not in str(info.value)
        finally:
            del METHOD_SPECS["test-space"]


def test_a_value_the_method_refuses_is_an_error_at_plan_time():
    from mtlbench.methods.params import CAGradParams

    saved = CAGradParams.search_space
    CAGradParams.search_space = {"c": (0.4, -1.0)}
    try:
        with pytest.raises(UserError, match="c must be a finite number ≥ 0"):
            search_space("cagrad")
    finally:
        CAGradParams.search_space = saved


def test_random_search_draws_distinct_points_in_a_seeded_order_the_defaults_first():
    space = search_space("deepchest")
    default = default_point(space, BASE)
    eight = trial_points(space, default, 8, seed=1000)
    assert eight[0] == default
    assert len({p.to_json() for p in eight}) == 8
    assert trial_points(space, default, 8, seed=1000) == eight  # the same every time, in any process
    assert trial_points(space, default, 4, seed=1000) == eight[:4]  # a larger budget extends a smaller one
    assert trial_points(space, default, 8, seed=1001)[1:] != eight[1:]  # another seed, other draws
    other = trial_points(search_space("cagrad"), default_point(search_space("cagrad"), BASE), 8, seed=1000)
    assert [p.config for p in other[1:]] != [p.config for p in eight[1:]]  # each method its own order


def test_draw_order_is_a_permutation_and_uniform_enough():
    order = list(draw_order(50, 3, "ew", first=7))
    assert order[0] == 7 and sorted(order) == list(range(50))
    firsts = [next(iter(draw_order(4, seed, "ew"))) for seed in range(400)]
    assert all(60 < firsts.count(i) < 140 for i in range(4))  # each index first about 100 times


def test_a_grid_no_larger_than_the_budget_is_searched_whole():
    space = search_space("ew")  # 16 points
    default = default_point(space, BASE)
    points = trial_points(space, default, 100, seed=0)
    assert len(points) == space.size and points[0] == default
    assert {p.to_json() for p in points} == {space.point(i).to_json() for i in range(space.size)}
    plan = plan_tune(BASE, ["ew", "uncertainty"], [0, 1], 20, 1000, {})
    assert len(plan.points["ew"]) == 16 and len(plan.points["uncertainty"]) == 20  # 16 < 20 < 32
    assert plan.total_runs() == 16 + 20 + 2 * 2


def test_plan_refuses_a_budget_below_one_and_a_bad_trial_seed():
    with pytest.raises(UserError, match="--trials must be at least 1, got 0"):
        plan_tune(BASE, ["ew"], [0], 0, 1000, {})
    with pytest.raises(UserError, match="--trial-seed"):
        plan_tune(BASE, ["ew"], [0], 2, -1, {})


def test_final_cells_are_the_selected_point_with_every_seed():
    plan = plan_tune(BASE, ["dwa"], [0, 1, 2], 3, 1000, {})
    point = plan.points["dwa"][2]
    finals = plan.final_cells("dwa", point)
    assert [c.seed for c in finals] == [0, 1, 2]
    assert all(c.lr == point.config["lr"] and c.method_params == point.method_params for c in finals)
    assert finals[0].config_hash() != plan.cell("dwa", plan.points["dwa"][0], 0).config_hash()


def test_study_identity_depends_on_budget_space_and_protocol():
    plan = plan_tune(BASE, ["ew"], [0], 4, 1000, {})
    assert plan.study("ew") == plan_tune(BASE, ["ew"], [0, 1, 2], 4, 1000, {}).study("ew")  # not on --seeds
    assert plan.study("ew") != plan_tune(BASE, ["ew"], [0], 5, 1000, {}).study("ew")
    assert plan.study("ew") != plan_tune(BASE, ["ew"], [0], 4, 1001, {}).study("ew")
    assert plan.study("ew") != plan_tune(build_config("quick"), ["ew"], [0], 4, 1000, {}).study("ew")


# --- the selection rule ------------------------------------------------------------------------


def test_selection_takes_the_best_validation_auroc():
    outcomes = [TrialOutcome(0, "complete", 0.61), TrialOutcome(1, "complete", 0.66), TrialOutcome(2, "complete", 0.64)]
    assert select_trial(outcomes).trial == 1


def test_selection_ties_go_to_the_lower_trial_and_unscored_trials_never_win():
    outcomes = [
        TrialOutcome(0, "diverged"),
        TrialOutcome(1, "complete", 0.7),
        TrialOutcome(2, "complete", 0.7),
        TrialOutcome(3, "oom"),
        TrialOutcome(4, "complete", math.nan),
    ]
    assert select_trial(outcomes).trial == 1
    assert select_trial([TrialOutcome(0, "diverged"), TrialOutcome(1, "complete", math.nan)]) is None


def test_a_failed_or_unfinished_trial_blocks_the_selection():
    done = [TrialOutcome(0, "complete", 0.6), TrialOutcome(1, "diverged")]
    assert selection_blocker(done) is None
    assert "failed" in selection_blocker([*done, TrialOutcome(2, "failed")])
    assert "not finished" in selection_blocker([*done, TrialOutcome(2, "running")])
    assert "not finished" in selection_blocker([*done, TrialOutcome(2, None)])
