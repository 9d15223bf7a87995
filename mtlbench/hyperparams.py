"""Method hyperparameters from `--param METHOD.NAME=VALUE`: parsed, typed and checked without torch.

Types come from the Params dataclass's field annotations: a float field takes a number (an
integer is kept as written, so a cell's hash does not change), never a word, a list or a
boolean, and it must be finite; a text field takes the text as written. Then the method's own
`check` runs (ranges, choices, readable files; methods/params/).
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import MISSING, asdict, fields
from typing import Any, Literal, Sequence

from mtlbench.errors import UserError, did_you_mean
from mtlbench.methods.params import METHOD_SPECS, MethodSpec
from mtlbench.tasks import TASK_NAMES


def method_spec(name: str) -> MethodSpec:
    """The spec of method `name` (built-in or plugin); a UserError naming the valid methods (and the
    likely one) otherwise. Plugins are loaded only for a name that is not built in."""
    if name in METHOD_SPECS:
        return METHOD_SPECS[name]
    from mtlbench.plugins import plugin_problem

    specs = all_method_specs()
    if name in specs:
        return specs[name]
    if plugin_problem(name):
        raise UserError(plugin_problem(name))
    if name not in specs:
        raise UserError(f"unknown method {name!r}{did_you_mean(name, specs)}; valid methods: {', '.join(specs)}")
    return specs[name]


def all_method_specs() -> dict[str, MethodSpec]:
    """Every method's spec: the built-ins (METHOD_SPECS, in catalog order), then installed plugins."""
    from mtlbench.plugins import plugin_specs

    return {**METHOD_SPECS, **plugin_specs()}


def resolved_params(method: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Every hyperparameter of `method` as its run uses it: the defaults with `overrides` applied,
    an integer in a float field written as a float (so `c=1` and `c=1.0` are one cell). For a
    method the registry does not know, the overrides as given."""
    spec = _known_spec(method)
    if spec is None:
        return dict(overrides or {})
    values = {**asdict(spec.Params()), **(overrides or {})}
    hints = field_types(spec.Params)
    for name, value in values.items():
        if isinstance(value, int) and not isinstance(value, bool) and name in hints and float in _arms(hints[name])[0]:
            values[name] = float(value)
    return values


def method_version(method: str) -> int:
    """The version of `method`'s math (METHOD_SPECS), part of a run's identity; 0 for an unknown method."""
    spec = _known_spec(method)
    return spec.version if spec is not None else 0


def _known_spec(method: str) -> MethodSpec | None:
    """The spec of a built-in or installed plugin method; None for a name neither knows (e.g. a
    stored run of a plugin that is no longer installed)."""
    if method in METHOD_SPECS:
        return METHOD_SPECS[method]
    return all_method_specs().get(method)


def field_types(params_class: type) -> dict[str, Any]:
    """Field name → resolved annotation of a Params dataclass."""
    hints = typing.get_type_hints(params_class)
    return {f.name: hints.get(f.name, Any) for f in fields(params_class)}


def _arms(hint: Any) -> tuple[list[Any], bool]:
    """The non-None alternatives of a (possibly Optional) annotation, and whether None is allowed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _is_text(hint: Any) -> bool:
    return hint is str or (
        typing.get_origin(hint) is Literal and all(isinstance(a, str) for a in typing.get_args(hint))
    )


def parse_value(text: str, hint: Any) -> Any:
    """The value `text` stands for in a field annotated `hint`.

    Text fields take the text as written ('null' is None where None is allowed); any other
    field takes the JSON value (so 2 stays 2, 1e-3 is 0.001), or, failing that, a float where the
    field is numeric (so 'nan' becomes NaN and is refused as not finite), or the text itself.
    """
    arms, optional = _arms(hint)
    if optional and text == "null":
        return None
    if any(_is_text(a) for a in arms):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    if float in arms or int in arms:
        try:
            return float(text)
        except ValueError:
            pass
    return text


def _type_problem(value: Any, hint: Any) -> str | None:
    """What is wrong with `value` for annotation `hint`, or None if it fits."""
    arms, optional = _arms(hint)
    if value is None:
        return None if optional else "must be given (not null)"
    problems = []
    for arm in arms:
        if arm is float or arm is int:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                problems.append("must be a number")
            elif not math.isfinite(value):
                problems.append("must be a finite number (not NaN or infinity)")
            elif arm is int and not isinstance(value, int):
                problems.append("must be a whole number")
            else:
                return None
        elif arm is bool:
            if isinstance(value, bool):
                return None
            problems.append("must be true or false")
        elif _is_text(arm):
            if isinstance(value, str):
                return None
            problems.append("must be text")
        else:
            return None  # an annotation this module does not know: the method's own check decides
    return problems[0] if problems else None


def check_fields(params: Any, method: str) -> None:
    """Every field of a Params instance has its annotated type and, if numeric, is finite."""
    hints = field_types(type(params))
    for f in fields(params):
        value = getattr(params, f.name)
        problem = _type_problem(value, hints[f.name])
        if problem:
            example = (
                "" if f.default is MISSING else f"; e.g. --param {method}.{f.name}={_as_text(f.default)} (the default)"
            )
            raise UserError(f"{method}.{f.name} {problem}, got {_shown(value)}{example}")


def _as_text(value: Any) -> str:
    """`value` as one writes it after `--param METHOD.NAME=`."""
    return value if isinstance(value, str) else json.dumps(value)


def _shown(value: Any) -> str:
    """`value` as an error message quotes it: 'text', nan, inf, [1, 2]."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return repr(value) if isinstance(value, str) else json.dumps(value, default=repr)


def make_params(params_class: type, overrides: dict[str, Any] | None, method: str) -> Any:
    """The Params instance of defaults ← `overrides`, with unknown names refused and field types checked.

    The method's own `check` is left to the method (it needs the run's task names).
    """
    overrides = dict(overrides or {})
    known = [f.name for f in fields(params_class)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
        raise UserError(
            f"unknown hyperparameter(s) {', '.join(unknown)} for {method}{hint}; "
            f"valid: {', '.join(sorted(known)) or 'none'}"
        )
    params = params_class(**overrides)
    check_fields(params, method)
    return params


def check_params(params: Any, method: str, task_names: Sequence[str] = TASK_NAMES) -> None:
    """Field types and finiteness, then the method's own rules (`Params.check`, if it has one)."""
    check_fields(params, method)
    own = getattr(params, "check", None)
    if own is not None:
        own(method, task_names)


def parse_method_params(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """'METHOD.NAME=VALUE' items → {method: {name: value}}, every method of the sweep checked.

    Refuses malformed items, unknown methods and names (with the likely one), a method that is
    not in `methods`, values of the wrong type or not finite, and whatever a method's own check
    refuses, including for methods given no --param (their defaults).
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        lhs, eq, text = item.partition("=")
        method, dot, name = lhs.partition(".")
        if not (eq and dot and method and name):
            raise UserError(f"--param {item!r}: expected METHOD.NAME=VALUE, e.g. deepchest.signal=val-accuracy")
        try:
            spec = method_spec(method)
        except UserError as exc:
            raise UserError(f"--param {item}: {exc}") from None
        if method not in methods:
            raise UserError(
                f"--param {item}: {method} is not in --methods ({', '.join(methods)}); "
                f"add it to --methods or drop this --param"
            )
        types_ = field_types(spec.Params)
        if name not in types_:
            raise UserError(
                f"--param {item}: unknown hyperparameter {name} for {method}"
                f"{did_you_mean(name, types_)}; valid: {', '.join(types_) or 'none'}"
            )
        out.setdefault(method, {})[name] = parse_value(text, types_[name])
    for method in methods:
        check_params(make_params(method_spec(method).Params, out.get(method), method), method)
    return out
