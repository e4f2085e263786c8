"""Entry point of ``nox -s bench``: ``python -m benchmarks.run [options]`` inside the bench venv.

Runs every benchmark (or ``--only`` some), prints one table per benchmark (medians with min/max,
side-by-side ratios, PASS/FAIL per target), writes ``bench-results/bench-sglang-<v>-<time>.json``
and ends with a Markdown summary for docs/performance.md.

Exit status: 0 when everything was measured, whatever the verdicts (this is not a test);
1 when something could not be measured (a command failed, SGLang is not the expected one).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import ROOT, use_installed_package

BENCHMARKS = ("imports", "patch", "facade", "envpolicy", "doctor")
EXPECT_ENV = "SGLANG_ROLL_COMPAT_EXPECT_SGLANG"  # set by the noxfile's install_sglang


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="fresh-interpreter runs per command (default 10)")
    parser.add_argument("--repeat", type=int, default=21, help="timed blocks per in-process measurement (default 21)")
    parser.add_argument("--budget-ms", type=float, default=20.0, help="length of one timed block (default 20 ms)")
    parser.add_argument(
        "--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results", help="where the JSON goes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the interleaving order")
    parser.add_argument("--note", default="", help="a line for the Markdown summary (about the machine, say)")
    args = parser.parse_args(argv)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BENCHMARKS)}")
    if args.runs < 1 or args.repeat < 1:
        parser.error("--runs and --repeat must be at least 1")
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _check_sglang() -> Any:
    import sglang_roll_compat

    from ._stats import BenchError

    found = sglang_roll_compat.SELECTION.installed.version
    expected = os.environ.get(EXPECT_ENV)
    if expected and found != expected:
        raise BenchError(f"expected SGLang {expected} in this venv, found {found}")
    log(f"SGLang {found}, family {sglang_roll_compat.FAMILY.name}; measuring {sglang_roll_compat.__file__}")
    return sglang_roll_compat


def _busy_note(facts: dict[str, Any], user_note: str) -> str:
    notes = [user_note] if user_note else []
    cores = facts.get("cpus_usable") or facts.get("cpu_count") or 1
    loads = [facts["load_average_start"][0], *facts.get("load_average_end", [0.0])[:1]]
    if max(loads) > 0.5 * cores:
        notes.append(
            f"The machine was busy (1-minute load average {loads[0]:.1f} at the start, {loads[-1]:.1f} at the "
            f"end, on {cores} usable cores): absolute times are noisy; the paired differences and ratios are "
            "the robust figures."
        )
    return " ".join(notes)


def bench(args: argparse.Namespace) -> int:
    from . import doctor_cost, envpolicy_cost, facade_overhead, import_cost, patch_cost, report
    from ._stats import FAIL, ProcessTimes, Section, time_processes

    facts = report.machine_facts()
    _check_sglang()
    python = sys.executable
    env = dict(os.environ)
    sections: list[Section] = []
    budget_s = args.budget_ms / 1e3
    with tempfile.TemporaryDirectory(prefix="sglang-roll-bench-") as tmp:
        # whole processes first, all commands in one interleaved schedule (cwd: a scratch directory,
        # so a fresh interpreter imports the installed package, not the checkout)
        commands: dict[str, list[str]] = {}
        if "imports" in args.only:
            commands.update(import_cost.commands(python))
        if "doctor" in args.only:
            commands.update(doctor_cost.commands(python))
        times = ProcessTimes({}, {})
        if commands:
            log(f"whole-process timings: {len(commands)} commands x {args.runs} runs, interleaved (+1 warm-up round)")
            times = time_processes(commands, runs=args.runs, env=env, cwd=tmp, seed=args.seed, progress=log)
        if "imports" in args.only:
            log("import probes (metadata lookups, heavy modules)")
            sections.append(import_cost.evaluate(times, python, env=env, cwd=tmp))
        # in-process: SGLang's engine module loaded once, here
        if {"patch", "facade", "envpolicy"} & set(args.only):
            log("importing SGLang's engine module in this process")
            importlib.import_module("sglang.srt.entrypoints.engine")
        if "patch" in args.only:
            log("patch()/unpatch()")
            sections.append(patch_cost.run(repeat=args.repeat))
        if {"facade", "envpolicy"} & set(args.only):
            with facade_overhead.fake_engine(Path(tmp)) as (engine, tm):
                if "facade" in args.only:
                    log("facade overhead per method")
                    sections.append(
                        facade_overhead.run(engine, tm, repeat=args.repeat, budget_s=budget_s, seed=args.seed)
                    )
                if "envpolicy" in args.only:
                    log("env policy")
                    sections.append(
                        envpolicy_cost.run(engine.server_args, repeat=args.repeat, budget_s=budget_s, seed=args.seed)
                    )
        if "doctor" in args.only:
            log("doctor probes")
            sections.append(doctor_cost.evaluate(times, python, env=env, cwd=tmp))
    facts.update(report.software_facts())
    settings = {
        "runs": args.runs,
        "repeat": args.repeat,
        "budget_ms": args.budget_ms,
        "seed": args.seed,
        "only": args.only,
    }
    print(report.render_text(sections))
    path = report.write_json(args.out, sections, facts, settings)
    counts = report.verdict_counts(sections)
    print(f"\n{counts['PASS']} targets pass, {counts[FAIL]} fail. Results: {path}")
    print("\n---- Markdown summary (for docs/performance.md) ----\n")
    print(report.render_markdown(sections, facts, _busy_note(facts, args.note)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_installed_package()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return bench(args)
    except Exception:
        traceback.print_exc()
        log("error: the benchmarks could not be completed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
