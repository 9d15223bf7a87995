"""The RunConfig that trainer tests start from."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mtlbench.config import RunConfig, build_config


def cpu_smoke_config(**fields: Any) -> RunConfig:
    """The smoke preset on the CPU, fp32 and the loop engine (deterministic), with `fields` replaced."""
    return replace(build_config("smoke"), **{"device": "cpu", "precision": "fp32", "grad_engine": "loop", **fields})
