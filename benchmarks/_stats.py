"""Measuring helpers shared by every benchmark: summaries, timeit-style loops, interleaved
whole-process timings, paired differences and targets.

Robustness on a busy machine comes from three habits: candidates are measured *interleaved*
(round after round, in a shuffled order), differences are taken *per round* (paired, so a slow
phase of the machine hits both sides), and every figure is a *median* with its min and max.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import time
import timeit
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PASS, FAIL, INFO = "PASS", "FAIL", "info"


class BenchError(RuntimeError):
    """Something could not be measured (a command failed): the run exits non-zero."""


# -- records ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """Median, min and max of some samples (seconds, or a plain ratio)."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Summary:
        if not samples:
            raise ValueError("no samples")
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def as_dict(self) -> dict[str, float | int]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


@dataclass(frozen=True)
class Measurement:
    """One row of the results table. ``unit`` is the display unit: s, ms, us or x (a ratio);
    the summary itself is always in seconds (or a plain number for x)."""

    name: str
    summary: Summary
    unit: str
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": "x" if self.unit == "x" else "s",
            **self.summary.as_dict(),
            "note": self.note,
        }


@dataclass(frozen=True)
class Target:
    """One goal: ``value`` must be at most ``limit`` (same unit). ``verdict`` is PASS, FAIL or info."""

    name: str
    value: float
    limit: float | None
    unit: str
    rule: str  # the target in words, e.g. "<= 1% of the eager import"
    verdict: str
    spread: Summary | None = None  # the samples behind ``value`` (its median), when there are several

    @classmethod
    def at_most(
        cls, name: str, value: float, limit: float, unit: str, rule: str, spread: Summary | None = None
    ) -> Target:
        return cls(name, value, limit, unit, rule, PASS if value <= limit else FAIL, spread)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "unit": "x" if self.unit == "x" else ("count" if self.unit == "count" else "s"),
            "rule": self.rule,
            "verdict": self.verdict,
            "spread": self.spread.as_dict() if self.spread else None,
        }


@dataclass
class Section:
    """What one benchmark reports."""

    key: str
    title: str
    measurements: list[Measurement] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "measurements": [m.as_dict() for m in self.measurements],
            "targets": [t.as_dict() for t in self.targets],
            "notes": list(self.notes),
            "extra": self.extra,
        }


def paired(a: Sequence[float], b: Sequence[float], op: Callable[[float, float], float]) -> list[float]:
    """``op(a_i, b_i)`` for every round i (both sides measured in the same round)."""
    if len(a) != len(b):
        raise ValueError("paired samples of different lengths")
    return [op(x, y) for x, y in zip(a, b, strict=True)]


def differences(base: Sequence[float], other: Sequence[float]) -> list[float]:
    return paired(base, other, lambda x, y: y - x)


def ratios(base: Sequence[float], other: Sequence[float]) -> list[float]:
    return paired(base, other, lambda x, y: y / x if x > 0 else float("inf"))


# -- in-process, timeit-style --------------------------------------------------------------------
def calibrate(func: Callable[[], object], budget_s: float) -> int:
    """The loop count that makes one timed block last about ``budget_s`` (like timeit's autorange)."""
    timer = timeit.Timer(func)
    number = 1
    while True:
        elapsed = timer.timeit(number)
        if elapsed >= budget_s:
            return number
        if elapsed <= 0:
            number *= 10
            continue
        number = max(number + 1, min(number * 10, int(number * budget_s / elapsed * 1.1)))


def side_by_side(
    funcs: Mapping[str, Callable[[], object]],
    *,
    repeat: int,
    budget_s: float,
    between: Callable[[], None] | None = None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Per-call seconds of each function, ``repeat`` blocks each, interleaved block by block in a
    shuffled order (sample ``i`` of every function comes from the same round). ``between`` runs
    before every block, untimed (to clear recorded calls, say). GC is off while timing, as timeit."""
    rng = random.Random(seed)
    for func in funcs.values():  # warm up: first calls fill caches
        func()
        func()
    numbers = {name: calibrate(func, budget_s) for name, func in funcs.items()}
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeat):
        order = list(funcs)
        rng.shuffle(order)
        for name in order:
            if between is not None:
                between()
            elapsed = timeit.Timer(funcs[name]).timeit(numbers[name])
            samples[name].append(elapsed / numbers[name])
    return samples


# -- whole processes, hyperfine-style -------------------------------------------------------------
@dataclass(frozen=True)
class ProcessTimes:
    """Per command, one sample per round: wall seconds (spawn to exit, what a user waits) and CPU
    seconds (user + system, from the child's rusage: far less sensitive to a busy machine)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]


def time_process(argv: Sequence[str], *, env: Mapping[str, str] | None, cwd: str | None) -> tuple[float, float]:
    """Wall and CPU seconds of one process (stdout discarded). Raises on failure."""
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            stderr.seek(0)
            tail = stderr.read().decode(errors="replace")[-2000:]
            raise BenchError(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return elapsed, usage.ru_utime + usage.ru_stime


def time_processes(
    commands: Mapping[str, Sequence[str]],
    *,
    runs: int,
    warmup: int = 1,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ProcessTimes:
    """Each command ``runs`` times, a fresh interpreter every time, interleaved: every round runs
    every command once, in a freshly shuffled order (so a slow minute of a busy machine lands on
    all of them). ``warmup`` untimed rounds first (page cache, byte-code)."""
    rng = random.Random(seed)
    out = ProcessTimes({name: [] for name in commands}, {name: [] for name in commands})
    for i in range(warmup + runs):
        order = list(commands)
        rng.shuffle(order)
        for name in order:
            wall, cpu = time_process(commands[name], env=env, cwd=cwd)
            if i >= warmup:
                out.wall[name].append(wall)
                out.cpu[name].append(cpu)
        if progress is not None:
            label = f"warm-up {i + 1}/{warmup}" if i < warmup else f"run {i - warmup + 1}/{runs}"
            done = [n for n in commands if out.wall[n]]
            progress(f"{label}: " + ", ".join(f"{n} {out.wall[n][-1]:.3f}s" for n in done))
    return out


# -- display ---------------------------------------------------------------------------------------
_SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6, "x": 1.0, "count": 1.0}


def fmt(value: float, unit: str) -> str:
    """``value`` (seconds, or a plain number for x/count) in ``unit``."""
    if unit == "count":
        return f"{value:g}"
    scaled = value * _SCALE[unit]
    shown = "µs" if unit == "us" else unit
    if unit == "x":
        return f"{scaled:.3f}x"
    digits = 3 if abs(scaled) < 10 else 2 if abs(scaled) < 100 else 1
    return f"{scaled:.{digits}f} {shown}"
