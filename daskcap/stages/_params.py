"""Validation shared by the stage params dataclasses."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


class ParamError(ValueError):
    """A bad stage parameter; the message names the parameter and what it accepts."""


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None, *, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ParamError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if low is not None and value < low:
        raise ParamError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ParamError(f"{name} must be <= {high}, got {value!r}")


def check_positive(name: str, value: Any) -> None:
    check_range(name, value)
    if not value > 0:
        raise ParamError(f"{name} must be > 0, got {value!r}")


def check_choice(name: str, value: Any, choices: Collection[str]) -> None:
    if value not in choices:
        raise ParamError(f"{name} must be one of {', '.join(sorted(choices))}; got {value!r}")
