"""The DeepChest ladder: `run --ladder`'s rungs (no training) and the report's ladder section (a database written
by tests/results_fixture.py)."""

from dataclasses import asdict

import pytest

from mtlbench.cli import build_parser
from mtlbench.commands.run import ladder_plans
from mtlbench.config import build_config
from mtlbench.errors import UserError
from mtlbench.ladder import RUNGS
from mtlbench.report.ladder import NOT_RUN, find_ladders, ladder_table
from mtlbench.report.leaderboard import leaderboard
from mtlbench.report.load import load_protocols
from tests.results_fixture import ProtocolSpec, build_results


def plans(*argv: str):
    return ladder_plans(build_parser().parse_args(["run", "--ladder", *argv]))


def test_each_rung_adds_one_of_the_authors_choices_and_the_last_is_their_preset():
    rungs = plans("--preset", "paper", "--seeds", "0,1")
    assert len(rungs) == len(RUNGS) == 7
    assert rungs[0].base == build_config("paper")
    assert rungs[-1].base == build_config("authors")  # paper + every rung = the authors' protocol
    changed = [sorted(k for k, v in asdict(b.base).items() if v != asdict(a.base)[k]) for a, b in zip(rungs, rungs[1:])]
    assert changed == [
        ["split"],
        ["select"],
        ["augment_eval"],
        ["method_optimizers"],
        [],
        ["arch", "neck", "pretrained"],
    ]
    assert [p.methods for p in rungs] == [("ew", "deepchest", "uncertainty", "gradnorm")] * 5 + [
        ("ew", "deepchest", "uncertainty", "gradnorm-authors")
    ] * 2
    released = {"deepchest": {"init": "authors"}, "uncertainty": {"regularizer": 0.5}}
    assert [p.method_params for p in rungs] == [{}] * 5 + [released] * 2
    assert all(p.seeds == (0, 1) for p in rungs)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--methods", "ew"], "--ladder fixes each rung's methods and their settings: drop --methods"),
        (["--param", "deepchest.signal=val-accuracy"], "drop --param"),
        (["--preset", "authors"], "--ladder starts from the fair protocol"),
        (["--split", "random-image"], "--ladder starts from the fair protocol"),
        (["--preset", "smoke"], r"--ladder rung 3 \(\+ training augmentation at evaluation\): --augment-eval"),
    ],
)
def test_bad_ladders_are_one_line_errors(argv, message):
    with pytest.raises(UserError, match=message):
        plans(*argv)


def _spec(settings: dict, methods: tuple[str, ...]) -> ProtocolSpec:
    scores = {"ew": 1.0, "deepchest": "perfect", "uncertainty": "noise", "gradnorm": 0.4, "gradnorm-authors": 0.4}
    return ProtocolSpec(methods=methods, seeds=(0,), failures={}, scores=scores, config=settings)


def test_the_report_finds_every_rung_and_compares_deepchest_with_the_best_baseline(tmp_path):
    published, released = RUNGS[0].methods(), RUNGS[-1].methods()
    settings, specs = {"augment": "paper"}, []
    for rung in RUNGS[:-1]:  # the last rung (ImageNet weights) not run, as on a machine without them
        settings = {**settings, **rung.settings}
        if not (rung.released and not rung.settings):  # the released-methods rung shares rung 4's protocol
            specs.append(_spec(dict(settings), published))
    build_results(tmp_path / "r.sqlite", *specs)
    protocols = load_protocols(tmp_path / "r.sqlite")
    (rungs,) = find_ladders(protocols)
    assert [p is None for p in rungs] == [False] * 6 + [True]
    assert rungs[4] is rungs[5]  # the same settings: only the methods differ
    boards = {p.key: leaderboard(p, resamples=20) for p in protocols}
    table = ladder_table(rungs, boards)
    assert list(table["protocol"])[-1] == NOT_RUN and list(table["protocol"])[:6] == [p.key for p in rungs[:6]]
    assert set(table["DeepChest accuracy"][:6]) == {"100.00%"} and set(table["DeepChest AUROC"][:6]) == {"1.000"}
    assert table.loc[6, "DeepChest accuracy"] == "—"
    assert set(table["best baseline (on validation)"][:5]) <= {"ew", "gradnorm", "uncertainty"}
    assert released[-1] not in set(table["best baseline (on validation)"])  # gradnorm-authors never ran here
    assert all(cell.endswith("pts") and cell.startswith("+") for cell in table["Δ accuracy (DeepChest − baseline)"][:6])


def test_no_ladder_without_a_later_rung(tmp_path):
    build_results(tmp_path / "r.sqlite", _spec({"augment": "paper"}, RUNGS[0].methods()))
    assert find_ladders(load_protocols(tmp_path / "r.sqlite")) == []


def test_a_protocol_that_already_made_an_authors_choice_starts_no_ladder(tmp_path):
    split = {"augment": "paper", "split": "random-image"}
    build_results(tmp_path / "r.sqlite", _spec(split, RUNGS[0].methods()), _spec({**split, "select": "last"}, ("ew",)))
    assert find_ladders(load_protocols(tmp_path / "r.sqlite")) == []


def test_the_readmes_rung_by_rung_commands_are_the_ladders_cells():
    from mtlbench.commands.run import plan_from

    def manual(*argv: str):
        return plan_from(build_parser().parse_args(["run", "--preset", "paper", *argv]))

    published = ["--methods", "ew,deepchest,uncertainty,gradnorm"]
    authors = "--split random-image --select last --augment-eval".split()
    optimizers = ["--method-optimizers", "uncertainty=adam,gradnorm=adam,gradnorm-authors=adam"]
    released = "--methods ew,deepchest,uncertainty,gradnorm-authors --param deepchest.init=authors".split()
    released += ["--param", "uncertainty.regularizer=0.5"]
    commands = [published + authors[: 2 * k - (k == 3)] for k in range(4)]
    commands += [published + authors + optimizers, released + authors + optimizers]
    commands.append(commands[-1] + "--arch resnet50 --neck 512 --pretrained imagenet".split())
    for by_hand, rung in zip(commands, plans("--preset", "paper")):
        plan = manual(*by_hand)
        assert (plan.base, plan.methods, plan.method_params) == (rung.base, rung.methods, rung.method_params)
