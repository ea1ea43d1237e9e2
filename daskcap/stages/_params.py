"""Validation shared by the stage params dataclasses.

Each params class collects every problem it finds and raises them together,
so a user fixes a command line in one go.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any


class ParamError(ValueError):
    """Bad stage parameters; ``problems`` holds one line per bad parameter."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class Checks:
    """Collects parameter problems; ``done()`` raises them all at once."""

    def __init__(self, owner: str):
        self.owner = owner
        self.problems: list[str] = []

    def fail(self, message: str) -> None:
        self.problems.append(f"{self.owner}: {message}")

    def number(self, name: str, value: Any, low: float | None = None, high: float | None = None, *, integer: bool = False, above: float | None = None) -> bool:
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            self.fail(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
            return False
        if not math.isfinite(value):
            # NaN passes every comparison below and inf every upper bound left open.
            self.fail(f"{name} must be a finite number, got {value!r}")
            return False
        if above is not None and not value > above:
            self.fail(f"{name} must be > {above}, got {value!r}")
            return False
        if low is not None and value < low:
            self.fail(f"{name} must be >= {low}, got {value!r}")
            return False
        if high is not None and value > high:
            self.fail(f"{name} must be <= {high}, got {value!r}")
            return False
        return True

    def choice(self, name: str, value: Any, choices: Collection[str]) -> None:
        if value not in choices:
            self.fail(f"{name} must be one of {', '.join(sorted(choices))}; got {value!r}")

    def text(self, name: str, value: Any, *, optional: bool = False) -> None:
        if value is None and optional:
            return
        if not isinstance(value, str) or not value.strip():
            self.fail(f"{name} must be a non-empty string, got {value!r}")

    def done(self) -> None:
        if self.problems:
            raise ParamError(self.problems)
