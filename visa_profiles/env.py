"""Environment variables → config, with every problem collected before failing.

Shared by the production settings (identity, catalogue, database) and the OpenStack settings, so
both report a bad environment the same way: one message naming every variable, and no hub
started half-configured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


class SettingsError(ValueError):
    """One or more environment variables are missing or invalid (all listed)."""


class EnvReader:
    """Reads variables, collecting problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env, self.problems = env, []  # type: ignore[var-annotated]

    def get(self, name: str, default: str = "") -> str:
        return (self.env.get(name) or default).strip()

    def number(self, name: str, default: float, minimum: float = 0) -> float:
        raw = self.get(name)
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = minimum - 1
        if not math.isfinite(value) or value < minimum:  # "nan" and "inf" parse, but mean nothing here
            self.problems.append(f"{name}={raw!r} must be a number >= {minimum:g}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name).lower()
        if not raw:
            return default
        if raw not in ("1", "0", "true", "false", "yes", "no"):
            self.problems.append(f"{name}={raw!r} must be 1/0, true/false or yes/no")
            return default
        return raw in ("1", "true", "yes")
