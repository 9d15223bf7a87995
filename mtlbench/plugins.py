"""Weighting methods from other packages, found through the `mtlbench.methods` entry-point group.

A package publishes a method by naming its class in its own packaging metadata, e.g. in
pyproject.toml:

    [project.entry-points."mtlbench.methods"]
    my-method = "my_package.my_module:MyMethod"

Once that package is installed, `mtlbench list`, `--methods my-method` and `--methods all` see
it without any edit to mtlbench. The class must subclass `mtlbench.methods.base.Method`; its
`needs`, `Params` and `version` class attributes play the part METHOD_SPECS plays for a built-in.
Loading a plugin imports its module (and so, usually, torch): it happens only when a name is not
a built-in one, for `all` and for `mtlbench list`. Each plugin loads on its own: one that fails
is refused, in one line, only where it is named; the others work.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, is_dataclass
from importlib.metadata import entry_points
from typing import Any

from mtlbench.errors import UserError

ENTRY_POINT_GROUP = "mtlbench.methods"
ADAPTER_MODULE = "mtlbench.methods.torchjd_adapter"  # its jd-* entry points are declared in setup.cfg


NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")  # what --methods and the report's variant labels can carry


@dataclass(frozen=True)
class PluginScan:
    """The installed plugins: those that load and are valid methods, and why each other one is not."""

    methods: dict[str, Any]
    problems: dict[str, str]  # name → one-line reason


@functools.lru_cache(maxsize=1)
def scan_plugins() -> PluginScan:
    """Load and check every installed plugin once per process, each on its own: a broken plugin is
    recorded (and refused when named) without hiding the others."""
    from mtlbench.methods.params import METHOD_SPECS

    methods: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in methods or ep.name in problems:
            continue  # the same distribution seen twice on sys.path
        try:
            if ep.name in METHOD_SPECS:
                raise UserError(
                    f"plugin method {ep.name!r} ({ep.value}) has the name of a built-in method; rename its entry point"
                )
            if not NAME_PATTERN.fullmatch(ep.name):
                raise UserError(
                    f"plugin method {ep.name!r} ({ep.value}): a name must be lower-case letters, digits, "
                    "'.', '_' or '-'"
                )
            try:
                cls = ep.load()
            except Exception as exc:  # noqa: BLE001  (a plugin's own bug: named, not a traceback)
                raise UserError(
                    f"plugin method {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}"
                ) from None
            check_method_class(ep.name, ep.value, cls)
        except UserError as exc:
            problems[ep.name] = str(exc)
            continue
        cls.name = ep.name
        methods[ep.name] = cls
    return PluginScan(methods, problems)


def plugin_methods() -> dict[str, Any]:
    """{name: method class} of every installed plugin that loads and is a valid method."""
    return scan_plugins().methods


def plugin_problem(name: str) -> str | None:
    """Why the installed plugin `name` cannot be used (one line), or None; loads the plugins only when `name` is
    an installed plugin's (so that an unknown name is refused without importing torch)."""
    if name not in {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}:
        return None
    return scan_plugins().problems.get(name)


def plugin_specs() -> dict[str, Any]:
    """{name: MethodSpec} of the installed plugins, for the checks that run before torch is imported.

    mtlbench's own torchjd adapters (ADAPTER_MODULE) have a fixed spec and are listed without importing
    them (they import torch), when torchjd is installed; any other plugin is loaded to read its spec."""
    from mtlbench.methods.params import MethodSpec, NoHyperparameters

    found = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    adapters = [ep.name for ep in found if ep.value.startswith(ADAPTER_MODULE + ":")]
    specs: dict[str, Any] = {}
    if adapters and importlib.util.find_spec("torchjd") is not None:
        specs = {name: MethodSpec("shared_params", NoHyperparameters, "none") for name in adapters}
    if len(adapters) < len(found):
        loaded = {
            n: MethodSpec(c.needs, c.Params, c.weight_scale, c.syncs_host, c.version)
            for n, c in plugin_methods().items()
            if n not in specs
        }
        specs = dict(sorted({**specs, **loaded}.items()))
    return specs


def check_method_class(name: str, where: str, cls: Any) -> None:
    """Refuse, in one line, a plugin class that cannot be a method."""
    from mtlbench.methods.base import Method
    from mtlbench.methods.params import WEIGHT_SCALES
    from mtlbench.spaces import SPACES

    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"plugin method {name!r} ({where}) is not a subclass of mtlbench.methods.base.Method")
    if cls.needs not in SPACES:
        raise UserError(
            f"plugin method {name!r} ({where}) needs the unknown gradient space {cls.needs!r}; "
            f"valid: {', '.join(SPACES)}"
        )
    if cls.weight_scale not in WEIGHT_SCALES:
        raise UserError(
            f"plugin method {name!r} ({where}) declares weight_scale {cls.weight_scale!r}; "
            f"valid: {', '.join(WEIGHT_SCALES)}"
        )
    if not (is_dataclass(cls.Params) and callable(getattr(cls.Params, "check", None))):
        raise UserError(
            f"plugin method {name!r} ({where}): Params must be a dataclass with a check(method, task_names)"
        )
    if not (isinstance(cls.version, int) and cls.version >= 1):
        raise UserError(f"plugin method {name!r} ({where}): version must be an integer ≥ 1")
