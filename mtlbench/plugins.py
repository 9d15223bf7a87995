"""Weighting methods from other packages, found through the `mtlbench.methods` entry-point group.

A package publishes a method by naming its class in its own packaging metadata, e.g. in
pyproject.toml:

    [project.entry-points."mtlbench.methods"]
    my-method = "my_package.my_module:MyMethod"

Once that package is installed, `mtlbench list`, `--methods my-method` and `--methods all` see
it without any edit to mtlbench. The class must subclass `mtlbench.methods.base.Method`; its
`needs`, `Params` and `version` class attributes play the part METHOD_SPECS plays for a built-in.
Loading a plugin imports its module (and so, usually, torch): it happens only when a name is not
a built-in one, or for `all`.
"""

from __future__ import annotations

import functools
from dataclasses import is_dataclass
from importlib.metadata import entry_points
from typing import Any

from mtlbench.errors import UserError

ENTRY_POINT_GROUP = "mtlbench.methods"


@functools.lru_cache(maxsize=1)
def plugin_methods() -> dict[str, Any]:
    """{name: method class} of every installed plugin method, each loaded and checked once.

    A plugin that does not import, or is not a valid method class, is a UserError naming it.
    """
    from mtlbench.methods.params import METHOD_SPECS

    found: dict[str, Any] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if ep.name in METHOD_SPECS:
            raise UserError(f"plugin method {ep.name!r} ({ep.value}) has the name of a built-in method; "
                            "rename its entry point")
        if ep.name in found:
            continue  # the same distribution seen twice on sys.path
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001  (a plugin's own bug: named, not a traceback)
            raise UserError(f"plugin method {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}") from None
        check_method_class(ep.name, ep.value, cls)
        cls.name = ep.name
        found[ep.name] = cls
    return found


def check_method_class(name: str, where: str, cls: Any) -> None:
    """Refuse, in one line, a plugin class that cannot be a method."""
    from mtlbench.methods.base import Method
    from mtlbench.spaces import SPACES

    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UserError(f"plugin method {name!r} ({where}) is not a subclass of mtlbench.methods.base.Method")
    if cls.needs not in SPACES:
        raise UserError(f"plugin method {name!r} ({where}) needs the unknown gradient space {cls.needs!r}; "
                        f"valid: {', '.join(SPACES)}")
    if not (is_dataclass(cls.Params) and callable(getattr(cls.Params, "check", None))):
        raise UserError(f"plugin method {name!r} ({where}): Params must be a dataclass with a check(method, task_names)")
    if not (isinstance(cls.version, int) and cls.version >= 1):
        raise UserError(f"plugin method {name!r} ({where}): version must be an integer ≥ 1")
