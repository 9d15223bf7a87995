"""Registries of weighting methods and datasets: one decorator away from each definition."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from mtlbench.errors import UserError, did_you_mean
from mtlbench.methods.params import METHOD_SPECS

T = TypeVar("T")


@dataclass
class Registry(Generic[T]):
    """A name → object table that lists its valid names in every lookup error."""

    kind: str
    package: str
    entries: dict[str, T]
    # Names listed first, in this order (the catalog's), whatever order their modules were imported in.
    order: tuple[str, ...] = ()
    # Loads objects defined outside the package (plugins): {name: object}.
    external: Callable[[], dict[str, T]] | None = None
    # Why an external object of that name exists but cannot be used (one line), or None.
    explain: Callable[[str], str | None] | None = None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that files the decorated object under `name`."""

        def decorate(obj: T) -> T:
            if name in self.entries and self.entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self.entries[name] = obj
            return obj

        return decorate

    def _load(self, external: bool = True) -> None:
        # The catalog module imports every definition module, which runs the decorators.
        importlib.import_module(self.package)
        if external and self.external is not None:
            for name, obj in self.external().items():
                self.entries.setdefault(name, obj)

    def names(self) -> list[str]:
        """All registered names: those of `order` first, then the others in registration order."""
        self._load()
        first = [n for n in self.order if n in self.entries]
        return first + [n for n in self.entries if n not in self.order]

    def get(self, name: str) -> T:
        """The object registered as `name`; a UserError naming the valid choices otherwise."""
        self._load(external=False)
        if name not in self.entries:
            self._load()
        if name not in self.entries and self.explain is not None and self.explain(name):
            raise UserError(self.explain(name))
        if name not in self.entries:
            valid = ", ".join(self.names())
            raise UserError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.entries)}; valid {self.kind}s: {valid}"
            )
        return self.entries[name]


def _plugin_methods() -> dict[str, Any]:
    from mtlbench.plugins import plugin_methods

    return plugin_methods()


def _plugin_problem(name: str) -> str | None:
    from mtlbench.plugins import plugin_problem

    return plugin_problem(name)


METHODS: Registry[Any] = Registry(
    "method", "mtlbench.methods.catalog", {}, tuple(METHOD_SPECS), _plugin_methods, _plugin_problem
)
# The catalog's order (the default dataset first), whatever order a process imported the loaders in.
DATASETS: Registry[Any] = Registry(
    "dataset",
    "mtlbench.datasets.catalog",
    {},
    ("cxr14-synth", "nih-cxr14", "chestmnist", "chexpert", "chexpert-synth", "mimic-cxr", "padchest", "padchest-synth"),
)


def register_method(name: str) -> Callable[[T], T]:
    """Register a weighting-method class under `name` (see methods/base.py for the contract).

    Its declaration (gradient need, Params, weight scale, host syncs, version) is its entry in
    METHOD_SPECS (methods/params/), which the CLI reads before it imports torch; this sets them
    on the class, so the class must not state them again. A method outside mtlbench registers
    through an entry point instead and declares them on its class (mtlbench/plugins.py).
    """

    def decorate(cls: Any) -> Any:
        spec = METHOD_SPECS.get(name)
        if spec is None:
            raise ValueError(f"method {name!r} needs an entry MethodSpec(...) in METHOD_SPECS (methods/params/)")
        restated = sorted(set(spec._fields) & set(vars(cls)))
        if restated:
            raise ValueError(f"method {name!r} restates {', '.join(restated)}: they belong to its METHOD_SPECS entry")
        for field, value in spec._asdict().items():
            setattr(cls, field, value)
        cls.name = name
        return METHODS.register(name)(cls)

    return decorate  # type: ignore[return-value]


def register_dataset(name: str) -> Callable[[T], T]:
    """Register a dataset loader under `name` (see datasets/base.py for the contract)."""
    return DATASETS.register(name)  # type: ignore[return-value]
