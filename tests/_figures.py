"""Reliability figures for the CI log: a session-wide registry and a terminal-summary hook.

Loaded as a pytest plugin (``pytest_plugins = ["_figures"]`` in conftest.py). Tests call
:func:`record` for every bad-input suite (how many inputs were tried, how many got the clear
error they should, how many crashed or hung: that last number must be 0) and :func:`note` for
free-form measurements (the patch-cycle growth figures); the summary prints them at the end of
the run, one line per suite, then everything on one line.
"""

from __future__ import annotations

from typing import Any

import pytest

_SUITES: dict[str, dict[str, int]] = {}
_NOTES: dict[str, dict[str, Any]] = {}


def record(suite: str, *, tried: int, errors: int, crashes: int) -> None:
    """Add one test's counts to ``suite`` (counts from several tests of a suite add up)."""
    entry = _SUITES.setdefault(suite, {"tried": 0, "errors": 0, "crashes": 0})
    entry["tried"] += tried
    entry["errors"] += errors
    entry["crashes"] += crashes


def note(suite: str, **values: Any) -> None:
    """Set measured values of ``suite`` (the last call for a key wins)."""
    _NOTES.setdefault(suite, {}).update(values)


def suites() -> dict[str, dict[str, int]]:
    return {name: dict(counts) for name, counts in _SUITES.items()}


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, dict):  # {"objects": 3, "hooks": 0} -> "growth: objects +3, hooks +0"
        return f"{key}: " + ", ".join(f"{k} {v:+d}" if isinstance(v, int) else f"{k} {v}" for k, v in value.items())
    return f"{key}={value}"


def lines() -> list[str]:
    out = [
        f"{name}: tried={c['tried']} clear errors={c['errors']} crashes/hangs={c['crashes']}"
        for name, c in _SUITES.items()
    ]
    for name, values in _NOTES.items():
        out.append(f"{name}: " + ", ".join(_fmt(key, value) for key, value in values.items()))
    return out


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    body = lines()
    if not body:
        return
    terminalreporter.write_sep("-", "sglang_roll_compat reliability figures")
    for line in body:
        terminalreporter.write_line(line)
    terminalreporter.write_line("sglang_roll_compat reliability figures: " + "; ".join(body))
