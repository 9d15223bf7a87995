"""Helpers for tests that wrap a harness function: read a call's argument by name, not position."""

from __future__ import annotations

import inspect
from typing import Any, Callable


def argument_reader(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """A function of (*args, **kwargs) returning the value `function` would bind to parameter `name`."""
    signature = inspect.signature(function)

    def read(*args: Any, **kwargs: Any) -> Any:
        return signature.bind(*args, **kwargs).arguments[name]

    return read
