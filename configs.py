"""Frozen-dataclass configs from plain dicts, shared by every layer (pipeline, trainer, tools):
one definition of "unknown keys are errors" for every config and its nested parts."""

from __future__ import annotations

import dataclasses
from typing import Any


def coerce_dataclass(cls, value: Any, what: str):
    """`value` as the frozen dataclass `cls`: None -> defaults, a dict -> fields (unknown keys
    are errors naming the known ones), an instance -> itself."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")
        return cls(**value)
    raise TypeError(f"{what}s must be a dict or {cls.__name__}, got {type(value).__name__}")
