"""Equal-budget tuning without torch: search spaces, the trials' draw, the selection rule, the plan.

Kurin et al. (NeurIPS 2022) and Xin et al. (NeurIPS 2022) found that specialised multi-task
methods rarely beat equal weighting once every method, EW included, is tuned with the same
budget and selected on validation. `mtlbench tune` does that; this module decides what it runs.

* **Space.** A method's search space is SHARED_SPACE (the run settings every method shares,
  one grid for all) and its own `Params.search_space` (methods/params/, next to the defaults).
  Every dimension is a finite tuple of values: the authors' configurations give grids, not
  distributions. A setting fixed on the command line (`--lr`, `--weight-decay`, in `--config`, or
  `--param METHOD.NAME=VALUE`) is not searched.
* **Trials.** `--trials N` for every method. Trial 0 is the defaults (the preset's learning
  rate and weight decay, the method's own defaults) where they lie in the space; then points of
  the grid drawn at random without replacement in an order fixed by the trial seed and the
  method's name (`draw_order`: SHA-256 of both and a counter, so any process, Python and NumPy
  version draws the same trials, and a larger budget extends a smaller one with the same first
  cells). A grid of at most N points is searched whole; such a method gets fewer than N trials,
  since any further trial would repeat a point (the same cell), and the report says so.
* **Selection** (`select_trial`): the trial with the highest validation mean AUROC at its
  selected epoch, as stored; the test split is never read. Ties go to the lower trial number.
  A diverged or out-of-memory trial is a result without a score; a failed or unfinished one
  blocks the selection (rerun to retry it), so no method is selected from fewer trials than planned.
* Trials train with one seed (`--trial-seed`, kept apart from `--seeds` by default so that no
  reported test number comes from the run that won the selection); the selected configuration is
  then run with every seed of `--seeds`. Trials and final runs are ordinary cells.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from typing import Any, Iterable, Iterator, Sequence

from mtlbench.config import RunConfig
from mtlbench.errors import UserError
from mtlbench.hyperparams import check_params, make_params, method_spec, resolved_params

# Searched for every method, from one grid, so that no method gets a better optimizer than another.
# lr: half-decades around the presets' 1e-3 (AdamW in quick, RMSprop in paper); Kurin et al.'s
# CelebA scripts pick 5e-4 or 1e-3 per method (unitary-scalarization-dmtl, scripts/celeba.sh).
# weight decay: 0 (the paper preset), 1e-4 (quick) and 1e-3 as in Kurin et al.'s scripts
# (celeba.sh, regularization_celeba.sh), and 1e-2, PyTorch's AdamW default (decoupled decay is
# scaled by the lr, so AdamW needs larger values). For SGD fix --lr, or widen this grid.
SHARED_SPACE: dict[str, tuple] = {
    "lr": (1e-4, 3e-4, 1e-3, 3e-3),
    "weight_decay": (0.0, 1e-4, 1e-3, 1e-2),
}
TRIAL_SEED = 1000  # the default seed of every trial: not one of the usual --seeds 0,1,2


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a RunConfig field (`shared`) or a hyperparameter of the method."""

    name: str
    values: tuple
    shared: bool


@dataclass(frozen=True, eq=False)
class Point:
    """One configuration of a search space: RunConfig fields and method hyperparameters."""

    config: dict[str, Any]
    method_params: dict[str, Any]

    def to_json(self) -> str:
        """As stored in the tuning table's values_json."""
        return json.dumps({"config": self.config, "method_params": self.method_params}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Point":
        """The point `to_json` wrote."""
        data = json.loads(text)
        return cls(dict(data.get("config") or {}), dict(data.get("method_params") or {}))

    def label(self, method: str) -> str:
        """'lr=0.001, weight_decay=0.0001, alpha=1.5' (a hyperparameter named like a shared setting
        gets its method's name: gradnorm.lr)."""
        return point_label(method, self.config, self.method_params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and self.to_json() == other.to_json()


def point_label(method: str, config: dict[str, Any], method_params: dict[str, Any]) -> str:
    """The settings of a configuration as `name=value`, shared ones first."""
    parts = [f"{k}={_shown(v)}" for k, v in config.items()]
    parts += [
        f"{method + '.' if k in config or k in SHARED_SPACE else ''}{k}={_shown(v)}" for k, v in method_params.items()
    ]
    return ", ".join(parts)


def _shown(value: Any) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class SearchSpace:
    """The grid searched for one method: the product of its dimensions' values."""

    method: str
    dimensions: tuple[Dimension, ...]

    @property
    def size(self) -> int:
        """The number of points of the grid."""
        return math.prod(len(d.values) for d in self.dimensions)

    def point(self, index: int) -> Point:
        """The `index`-th point of the grid (the last dimension varies fastest)."""
        config: dict[str, Any] = {}
        params: dict[str, Any] = {}
        for d in reversed(self.dimensions):
            index, digit = divmod(index, len(d.values))
            (config if d.shared else params)[d.name] = d.values[digit]
        return Point(dict(reversed(config.items())), dict(reversed(params.items())))

    def index_of(self, point: Point) -> int | None:
        """The index of `point` in the grid, or None if it is not a point of it."""
        index = 0
        for d in self.dimensions:
            value = (point.config if d.shared else point.method_params).get(d.name)
            matches = [i for i, v in enumerate(d.values) if _same(v, value)]
            if not matches:
                return None
            index = index * len(d.values) + matches[0]
        return index

    def describe(self) -> str:
        """'lr ∈ {0.0001, 0.0003, …} × alpha ∈ {…}: 60 points'."""
        dims = " × ".join(
            f"{d.name if d.shared or d.name not in SHARED_SPACE else self.method + '.' + d.name} ∈ "
            f"{{{', '.join(_shown(v) for v in d.values)}}}"
            for d in self.dimensions
        )
        return f"{dims}: {self.size:,} point{'s' if self.size != 1 else ''}"


def _same(a: Any, b: Any) -> bool:
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return float(a) == float(b)
    return a == b


def search_space(method: str, fixed_config: Iterable[str] = (), fixed_params: Iterable[str] = ()) -> SearchSpace:
    """The search space of `method`: SHARED_SPACE then its Params' `search_space`, without the
    settings fixed on the command line. A UserError (one line) for an unknown method, a declared
    space that names an unknown hyperparameter, a dimension without values or with a value its
    method refuses, and a space left with no dimension (nothing to tune)."""
    spec = method_spec(method)
    own = getattr(spec.Params, "search_space", None) or {}
    where = f"{spec.Params.__name__}.search_space"
    if not isinstance(own, dict):
        raise UserError(f"{method}: {where} must be a dict {{hyperparameter: (values, …)}}, got {type(own).__name__}")
    fixed_config, fixed_params = set(fixed_config), set(fixed_params)
    dims = [Dimension(name, tuple(values), True) for name, values in SHARED_SPACE.items() if name not in fixed_config]
    for name, values in own.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list)):
            raise UserError(f"{method}: {where}[{name!r}] must be a tuple of values, got {values!r}")
        if name not in fixed_params:
            dims.append(Dimension(name, tuple(values), False))
    for d in dims:
        if not d.values:
            raise UserError(
                f"{method}: the search space of {d.name} is empty; give it at least one value in "
                f"{'mtlbench.tuning.SHARED_SPACE' if d.shared else where}"
            )
        if len({json.dumps(v, sort_keys=True, default=str) for v in d.values}) != len(d.values):
            raise UserError(f"{method}: the search space of {d.name} repeats a value: {d.values!r}")
        if not d.shared:
            for value in d.values:  # types and the method's own rules (unknown names are refused here too)
                check_params(make_params(spec.Params, {d.name: value}, method), method)
    if not dims:
        fixed = ", ".join(
            [f"--{n.replace('_', '-')}" for n in sorted(fixed_config & set(SHARED_SPACE))]
            + [f"--param {method}.{n}" for n in sorted(fixed_params & set(own))]
        )
        raise UserError(
            f"{method}: nothing to tune: its search space is empty"
            + (f" once {fixed} are fixed; drop one of them" if fixed else "")
        )
    return SearchSpace(method, tuple(dims))


def default_point(space: SearchSpace, base: RunConfig, fixed_params: dict[str, Any] | None = None) -> Point:
    """The configuration a plain `mtlbench run` would train: the base config's shared settings and
    the method's resolved defaults (with the fixed hyperparameters), restricted to the space."""
    params = resolved_params(space.method, fixed_params)
    return Point(
        {d.name: getattr(base, d.name) for d in space.dimensions if d.shared},
        {d.name: params.get(d.name) for d in space.dimensions if not d.shared},
    )


def draw_order(size: int, seed: int, method: str, first: int | None = None) -> Iterator[int]:
    """Every index of a grid of `size` points once: `first` (if any), then uniform draws without
    replacement in an order fixed by `seed` and `method` (SHA-256 of both and a counter)."""
    seen: set[int] = set()
    if first is not None:
        seen.add(first)
        yield first
    counter = 0
    while len(seen) < size:
        digest = hashlib.sha256(f"mtlbench tune {seed} {method} {counter}".encode()).digest()
        counter += 1
        index = int.from_bytes(digest[:8], "big") % size
        if index not in seen:
            seen.add(index)
            yield index


def trial_points(space: SearchSpace, default: Point | None, trials: int, seed: int) -> list[Point]:
    """The `trials` points searched (all of a grid that small): the default first where it is a
    point of the grid, then seeded draws (`draw_order`)."""
    first = space.index_of(default) if default is not None else None
    if trials >= space.size:  # the whole grid; the default first, then grid order
        order = [*([first] if first is not None else []), *(i for i in range(space.size) if i != first)]
    else:
        drawn = draw_order(space.size, seed, space.method, first)
        order = [next(drawn) for _ in range(trials)]
    return [space.point(i) for i in order]


@dataclass(frozen=True)
class TrialOutcome:
    """What the database holds for one trial: its status (None: no run yet) and its validation
    mean AUROC at the selected epoch (NaN unless complete and measurable)."""

    trial: int
    status: str | None
    val_auroc: float = float("nan")


def select_trial(outcomes: Sequence[TrialOutcome]) -> TrialOutcome | None:
    """The complete trial with the highest validation mean AUROC (ties: the lower trial number);
    None if no trial has one."""
    scored = [o for o in outcomes if o.status == "complete" and math.isfinite(o.val_auroc)]
    return max(scored, key=lambda o: (o.val_auroc, -o.trial)) if scored else None


def selection_blocker(outcomes: Sequence[TrialOutcome]) -> str | None:
    """Why the trials cannot be selected from yet, or None: a trial that failed (retried on rerun),
    or one not finished (running in another process, or interrupted)."""
    failed = [o.trial for o in outcomes if o.status in ("failed", "interrupted")]
    unfinished = [o.trial for o in outcomes if o.status in (None, "running")]
    if failed:
        return (
            f"trial(s) {', '.join(map(str, failed))} failed: nothing selected; rerun the same command to "
            "retry them (the finished trials are kept)"
        )
    if unfinished:
        return (
            f"trial(s) {', '.join(map(str, unfinished))} are not finished (another process is running them): "
            "nothing selected yet; rerun the same command once they are"
        )
    return None


@dataclass(frozen=True)
class TunePlan:
    """What `mtlbench tune` runs: per method, its trials (seed `trial_seed`), then the selected
    configuration × `seeds`. `method_params` are the hyperparameters fixed by --param."""

    base: RunConfig
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int
    trial_seed: int
    method_params: dict[str, dict[str, Any]]
    spaces: dict[str, SearchSpace]
    points: dict[str, tuple[Point, ...]]

    def cell(self, method: str, point: Point, seed: int) -> RunConfig:
        """The run of `method` at `point` with `seed`."""
        params = {**self.method_params.get(method, {}), **point.method_params}
        return replace(self.base, **point.config, method=method, seed=seed, method_params=params)

    def trial_cells(self, method: str) -> list[RunConfig]:
        """The trials of `method`, in trial order."""
        return [self.cell(method, p, self.trial_seed) for p in self.points[method]]

    def final_cells(self, method: str, point: Point) -> list[RunConfig]:
        """The selected configuration of `method` with every seed."""
        return [self.cell(method, point, s) for s in self.seeds]

    def total_runs(self) -> int:
        """Trials and final runs of every method."""
        return sum(len(self.points[m]) + len(self.seeds) for m in self.methods)

    def study(self, method: str) -> str:
        """The identity of `method`'s search: its protocol (the base config with the fixed
        hyperparameters, resolved, and the trial seed), its space and the budget."""
        cell = replace(self.base, method=method, method_params=self.method_params.get(method, {}), seed=self.trial_seed)
        space = [(d.name, d.shared, list(d.values)) for d in self.spaces[method].dimensions]
        blob = json.dumps(
            {"cell": cell.hashed_fields(), "space": space, "budget": self.trials}, sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_tune(
    base: RunConfig,
    methods: Sequence[str],
    seeds: Sequence[int],
    trials: int,
    trial_seed: int,
    method_params: dict[str, dict[str, Any]],
    fixed_config: Iterable[str] = (),
) -> TunePlan:
    """Every method's space and trials, each point's hyperparameters checked (no torch)."""
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    if not 0 <= trial_seed <= 2**31 - 1:
        raise UserError(f"--trial-seed must be between 0 and {2**31 - 1}, got {trial_seed}")
    fixed_config = tuple(fixed_config)
    spaces, points = {}, {}
    for m in methods:
        fixed = method_params.get(m, {})
        space = search_space(m, fixed_config, fixed)
        chosen = trial_points(space, default_point(space, base, fixed), trials, trial_seed)
        spec = method_spec(m)
        for p in chosen:  # a combination the method refuses (each value alone passed)
            check_params(make_params(spec.Params, {**fixed, **p.method_params}, m), m)
        spaces[m], points[m] = space, tuple(chosen)
    return TunePlan(base, tuple(methods), tuple(seeds), trials, trial_seed, method_params, spaces, points)
