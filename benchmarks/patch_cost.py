"""Target 2: ``sglang_roll_compat.unpatch()`` and ``patch()`` once SGLang's engine module is loaded.

Only the family of the installed SGLang can be measured in one venv (``--sglang`` picks another).
Each iteration unpatches then re-patches; the two calls are timed separately with
``perf_counter`` and summed per block of ``number`` iterations, ``repeat`` blocks: per-call
median/min/max over blocks, as timeit would report it.
"""

from __future__ import annotations

import gc
import importlib
import time
from typing import Any

from ._stats import BenchError, Measurement, Section, Summary, Target

LIMIT_S = 1e-3  # each of patch() and unpatch() <= 1 ms


def _applied(pkg: Any) -> list[str]:
    return [s.name for s in pkg.status() if s.state == "applied"]


def run(*, repeat: int, number: int = 200) -> Section:
    pkg = importlib.import_module("sglang_roll_compat")
    importlib.import_module("sglang.srt.entrypoints.engine")
    applied = _applied(pkg)
    if not applied:
        raise BenchError("no patch is applied after importing the engine module: nothing to measure")
    section = Section("patch", f"2. Patch apply / unpatch, family {pkg.FAMILY.name} ({len(applied)} patch points)")
    unpatch_s: list[float] = []
    patch_s: list[float] = []
    pc = time.perf_counter
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            total_un = total_p = 0.0
            for _ in range(number):
                t0 = pc()
                pkg.unpatch()
                t1 = pc()
                pkg.patch()
                t2 = pc()
                total_un += t1 - t0
                total_p += t2 - t1
            unpatch_s.append(total_un / number)
            patch_s.append(total_p / number)
    finally:
        if gc_was_enabled:
            gc.enable()
    if _applied(pkg) != applied:
        raise BenchError(f"patch state changed by the benchmark: {applied} -> {_applied(pkg)}")
    for label, samples in (("unpatch()", unpatch_s), ("patch()", patch_s)):
        summary = Summary.of(samples)
        section.measurements.append(Measurement(label, summary, "us", f"{number} calls per block"))
        section.targets.append(Target.at_most(f"{label} per call", summary.median, LIMIT_S, "us", "<= 1 ms", summary))
    section.extra = {"family": pkg.FAMILY.name, "patches_applied": applied, "number": number, "repeat": repeat}
    section.notes.append(f"Applied patch points: {', '.join(applied)}.")
    return section
