"""Target 4b: the doctor's wall time as a ratio to its unavoidable floor.

``python -m sglang_roll_compat`` imports SGLang's engine module (that is its job), so its floor is
a bare ``python -c "import sglang.srt.entrypoints.engine"``. For ``--no-import`` a probe first
records what that mode really imports, and the floor is the cheapest bare import that covers it:
the engine module, a plain ``import sglang``, or (when it imports neither) ``import
sglang_roll_compat`` itself, since finding and checking the installed SGLang is the doctor's job.
The doctor runs in the same interleaved schedule as the floors (``import_cost``'s commands).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from . import import_cost
from ._stats import BenchError, Measurement, ProcessTimes, Section, Summary, Target, ratios

DOCTOR, DOCTOR_NO_IMPORT = "doctor", "doctor --no-import"
LIMIT = 1.2

_PROBE = r"""
import contextlib, io, json, sys
from sglang_roll_compat import cli
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules
                   if m == "sglang" or m.startswith(("sglang.", "torch")))}))
"""


def commands(python: str) -> dict[str, list[str]]:
    floors = import_cost.commands(python)
    return {
        DOCTOR: [python, "-m", "sglang_roll_compat"],
        DOCTOR_NO_IMPORT: [python, "-m", "sglang_roll_compat", "--no-import"],
        import_cost.EAGER: floors[import_cost.EAGER],
        import_cost.PLAIN: floors[import_cost.PLAIN],
        import_cost.OURS: floors[import_cost.OURS],
    }


def probe(python: str, args: Sequence[str], *, env: Mapping[str, str] | None, cwd: str | None) -> dict[str, Any]:
    proc = subprocess.run([python, "-c", _PROBE, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"the doctor probe {list(args)} failed:\n{proc.stderr[-2000:]}")
    found: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if found["code"] != 0:
        raise BenchError(f"the doctor {list(args)} exited {found['code']} (SGLang not supported here?)")
    return found


def _floor(modules: Sequence[str]) -> tuple[str, str]:
    if "sglang.srt.entrypoints.engine" in modules:
        return import_cost.EAGER, "python -c 'import sglang.srt.entrypoints.engine'"
    if "sglang" in modules:
        return import_cost.PLAIN, "python -c 'import sglang'"
    return import_cost.OURS, "python -c 'import sglang_roll_compat'"


def evaluate(times: ProcessTimes, python: str, *, env: Mapping[str, str] | None, cwd: str | None) -> Section:
    section = Section("doctor", "4b. The doctor (whole process) against its floor")
    for name, args in ((DOCTOR, []), (DOCTOR_NO_IMPORT, ["--no-import"])):
        found = probe(python, args, env=env, cwd=cwd)
        floor_key, floor_label = _floor(found["modules"])
        heavy = [m for m in found["modules"] if m in ("sglang", "sglang.srt.entrypoints.engine", "torch")]
        label = f"python -m sglang_roll_compat{' --no-import' if args else ''}"
        samples = times.wall
        ratio = Summary.of(ratios(samples[floor_key], samples[name]))
        cpu_ratio = Summary.of(ratios(times.cpu[floor_key], times.cpu[name]))
        section.measurements += [
            Measurement(
                label, Summary.of(samples[name]), "ms", f"imports: {', '.join(heavy) or 'no sglang, no torch'}"
            ),
            Measurement(f"floor: {floor_label}", Summary.of(samples[floor_key]), "ms"),
            Measurement(f"{label} / floor", ratio, "x", "wall, per round"),
            Measurement(f"{label} / floor, CPU time", cpu_ratio, "x", "user+sys, per round"),
        ]
        section.targets.append(
            Target.at_most(
                f"doctor: {label}",
                ratio.median,
                LIMIT,
                "x",
                f"<= {LIMIT}x {floor_label} (CPU time: {cpu_ratio.median:.3f}x)",
                ratio,
            )
        )
        section.extra[name] = {"floor": floor_label, "imports": heavy, "modules_imported": len(found["modules"])}
    return section
