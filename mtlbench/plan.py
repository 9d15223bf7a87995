"""What a sweep will run, parsed and checked from the command line without torch.

Every check here runs before `mtlbench run` imports torch or touches data: a wrong --methods,
--seeds or --param is one line in well under a second, and leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from mtlbench.config import RunConfig
from mtlbench.errors import UserError
from mtlbench.hyperparams import all_method_specs, method_spec
from mtlbench.methods.params import CORE_SPECS, SINGLE_TASK
from mtlbench.spaces import space
from mtlbench.tasks import TASK_NAMES

MAX_CELLS = 10_000  # runs (methods × seeds) one command may ask for
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class SweepPlan:
    """What to run: the base config (method/seed filled per cell), methods, seeds."""

    base: RunConfig
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    method_params: dict[str, dict[str, Any]]
    stl: bool = False  # also the single-task baseline: one `stl` run per task and seed
    shard: tuple[int, int] = (1, 1)  # (K, N): this process runs the K-th of N interleaved shares of the cells

    def cells(self) -> list[RunConfig]:
        """This shard's cells: of all cells (with `stl`, one single-task RunConfig per seed × task first; then one
        per method × seed, methods outermost), those whose position i has i mod N = K − 1."""
        k, n = self.shard
        return [c for i, c in enumerate(self.all_cells()) if i % n == k - 1]

    def all_cells(self) -> list[RunConfig]:
        """Every cell of the sweep, whatever the shard (see `cells`)."""
        cells = [
            replace(self.base, method=m, seed=s, method_params=self.method_params.get(m, {}))
            for m in self.methods
            for s in self.seeds
        ]
        single = [
            replace(self.base, method=STL, seed=s, method_params={}, tasks=t) for s in self.seeds for t in TASK_NAMES
        ]
        return (single if self.stl else []) + cells


def parse_shard(text: str | None) -> tuple[int, int]:
    """`--shard K/N` as (K, N) with 1 ≤ K ≤ N; (1, 1) when not given."""
    if not text:
        return (1, 1)
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise UserError(f"--shard must be K/N (e.g. 2/8: the second of eight shares of the cells), got {text!r}")
    k, n = (int(p) for p in parts)
    if not 1 <= k <= n:
        raise UserError(f"--shard K/N needs 1 ≤ K ≤ N, got {text!r}")
    return (k, n)


# named method sets, in the order `mtlbench list` shows them; `core` is the default of `run` and `tune`
METHOD_SET_HELP = {
    "core": "the 13 methods mtlbench started with (cheap enough for the default run on 2 CPU cores): the default",
    "loss": "every loss-weighting method (no per-task gradients; costs about what EW costs)",
    "gradient": "every method that needs per-task gradients (T backward passes per step)",
    "all": "every registered method, installed plugins included (not the torchjd adapters)",
    "torchjd": "torchjd's weightings under this harness (jd-*; the torchjd extra: pip install -e '.[torchjd]')",
}
TORCHJD_PREFIX = "jd-"  # the adapters' names (methods/torchjd_adapter.py): a second implementation, not more methods
TORCHJD_MISSING = "the jd-* methods need torchjd"  # what the adapter module raises without the extra
STL = SINGLE_TASK  # the single-task baseline: not a weighting method, so in no set; `run --stl` adds its runs


def method_sets() -> dict[str, tuple[str, ...]]:
    """Each named set's methods, in registration order (plugins count in `loss`, `gradient` and `all`; the
    torchjd adapters only in `torchjd`)."""
    every = all_method_specs()
    specs = {n: spec for n, spec in every.items() if not n.startswith(TORCHJD_PREFIX) and n != STL}
    return {
        "core": tuple(n for n in CORE_SPECS if n in specs),
        "loss": tuple(n for n, spec in specs.items() if spec.needs == "losses"),
        "gradient": tuple(n for n, spec in specs.items() if spec.needs != "losses"),
        "all": tuple(specs),
        "torchjd": tuple(n for n in every if n.startswith(TORCHJD_PREFIX)),
    }


def parse_methods(text: str) -> tuple[str, ...]:
    """A comma list of method names and set names (core, loss, gradient, all), validated, order kept,
    duplicates dropped: e.g. `core,imtl-g`."""
    sets = method_sets()
    names: list[str] = []
    for part in (t.strip() for t in text.split(",")):
        if part:
            names.extend(sets.get(part, (part,)))
    if not names:
        raise UserError("--methods is empty; give a set (core, loss, gradient, all) or names such as ew,deepchest")
    if STL in names:
        raise UserError("--methods stl: the single-task baseline is one run per task; add it with --stl")
    for n in names:
        try:
            method_spec(n)
        except UserError as exc:
            raise UserError(f"{exc}; sets: {', '.join(sets)}") from None
    return tuple(dict.fromkeys(names))


def parse_seeds(text: str, limit: int = MAX_CELLS) -> tuple[int, ...]:
    """'0,1,2' or '0-4' (or a mix) → distinct seeds in 0 … 2³¹−1, at most `limit` of them.

    Ranges are counted before they are expanded, so '0-2147483647' is refused at once.
    """
    spans: list[tuple[int, int]] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                spans.append((int(lo), int(hi)))
            elif part:
                spans.append((int(part), int(part)))
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected integers like 0,1,2 or 0-4") from None
    if not spans:
        raise UserError("--seeds is empty; give e.g. 0 or 0,1,2")
    for lo, hi in spans:
        if hi < lo:
            raise UserError(f"--seeds {text!r}: the range {lo}-{hi} is reversed; write {hi}-{lo}")
        for s in (lo, hi):
            if s < 0 or s > MAX_SEED:
                raise UserError(f"--seeds: {s} is out of range (0 … {MAX_SEED})")
    count = sum(hi - lo + 1 for lo, hi in spans)
    if count > limit:
        raise UserError(
            f"--seeds {text!r} names {count:,} seeds; one command runs at most {limit:,} runs "
            "(methods × seeds): split the seeds over several commands with the same --results"
        )
    return tuple(dict.fromkeys(s for lo, hi in spans for s in range(lo, hi + 1)))


def check_cell_count(methods: Sequence[str], seeds: Sequence[int], limit: int = MAX_CELLS, stl: bool = False) -> None:
    """Refuse a sweep of more than `limit` runs (methods × seeds, plus tasks × seeds with `stl`)."""
    per_seed = len(methods) + (len(TASK_NAMES) if stl else 0)
    cells = per_seed * len(seeds)
    if cells > limit:
        what = f"({len(methods)} + {len(TASK_NAMES)} single-task)" if stl else f"{len(methods)}"
        raise UserError(
            f"--methods × --seeds is {what} × {len(seeds):,} = {cells:,} runs; one command runs "
            f"at most {limit:,}: split the seeds over several commands with the same --results"
        )


def check_methods_fit(config: RunConfig, methods: Sequence[str]) -> None:
    """Refuse, before anything runs, a method that cannot work under `config`.

    With a frozen trunk there is no shared gradient to weight or aggregate: a gradient method
    (anything that needs more than the losses) would silently train the heads like EW. A
    compiled graph cannot be backpropagated several times (its buffers are donated), which the
    per-task gradients of a gradient method need.
    """
    needing = [m for m in methods if space(method_spec(m).needs).per_task]
    if needing and config.compile:
        raise UserError(
            f"--compile supports loss-weighting methods only: the gradient method(s) {', '.join(needing)} "
            "backpropagate several times through one graph, which a compiled graph does not allow; "
            "drop --compile or those methods"
        )
    if needing and config.freeze_trunk:
        raise UserError(
            f"--freeze-trunk leaves no shared gradient for the gradient method(s) {', '.join(needing)}; "
            "drop them from --methods or train the trunk"
        )


def protocol_warnings(config: RunConfig, methods: Sequence[str], method_params: dict[str, dict[str, Any]]) -> list[str]:
    """Lines a sweep prints before it starts: a method whose defining phase this protocol never reaches (it runs,
    but its results would not be the method's)."""
    warnings = []
    if "stch" in methods:
        from mtlbench.hyperparams import resolved_params

        warmup = int(resolved_params("stch", method_params.get("stch"))["warmup_epochs"])
        if config.epochs < warmup + 2:  # epochs 0 … W are its warm-up (Σ log L); STCH itself starts at W + 1
            warnings.append(
                f"stch: with --epochs {config.epochs} and warmup_epochs={warmup}, STCH never leaves its warm-up "
                f"(Σ log L_t, as GLS): its results here are not STCH's; give --epochs ≥ {warmup + 2} or "
                f"--param stch.warmup_epochs={max(config.epochs - 2, 0)}"
            )
    if "dwa" in methods and config.epochs <= 3:  # DWA's weights are 1 for the first two epochs (Liu et al., eq. 7)
        warnings.append(
            f"dwa: its first two epochs are equal weighting, so with --epochs {config.epochs} "
            + (
                "it is EW throughout"
                if config.epochs <= 2
                else "only the last epoch is DWA's, and a model selected on validation at an earlier epoch is EW's"
            )
            + ": give --epochs ≥ 4 to compare DWA with EW"
        )
    if config.augment_eval:
        warnings.append(
            "--augment-eval scores validation and test images after the training augmentation (the DeepChest authors' "
            "evaluation, not standard practice): its numbers are not comparable with unaugmented evaluation"
        )
    if config.select == "last":
        warnings.append(
            "--select last: no model selection, the last epoch's model is tested (as the DeepChest authors)"
        )
    if config.split == "random-image":
        warnings.append(
            "--split random-image is LEAKY by design (the DeepChest authors' split by image): a test image's "
            "patient may have images in training, so test scores include recognising patients; compare it only "
            "with the official split's runs on the same test images (the report's leak section)"
        )
    return warnings
