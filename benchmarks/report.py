"""Machine facts, the printed tables, the JSON file and the Markdown summary for docs/performance.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import ROOT
from ._stats import FAIL, PASS, Section, Target, fmt


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def machine_facts() -> dict[str, Any]:
    """Facts that need no SGLang import; ``software_facts`` adds the rest later."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gib": _mem_total_gib(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "git_commit": _git_commit(),
    }


def software_facts() -> dict[str, Any]:
    """Versions, read once everything is imported (no extra metadata scan for SGLang)."""
    import wrapt

    import sglang_roll_compat

    facts: dict[str, Any] = {
        "sglang": sglang_roll_compat.SELECTION.installed.version,
        "family": sglang_roll_compat.FAMILY.name,
        "sglang_roll_compat": sglang_roll_compat.__version__,
        "sglang_roll_compat_file": sglang_roll_compat.__file__,
        "wrapt": getattr(wrapt, "__version__", None),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        facts["torch"] = str(torch.__version__)
    else:
        from importlib import metadata

        facts["torch"] = metadata.version("torch")
    facts["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return facts


# -- printed tables -------------------------------------------------------------------------------
def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for cell, width, a in zip(cells, widths, align, strict=True):
            out.append(cell.rjust(width) if a == "r" else cell.ljust(width))
        return "  ".join(out).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _value(target: Target) -> str:
    return fmt(target.value, target.unit)


def _spread(target: Target) -> str:
    if target.spread is None or target.spread.n < 2:
        return ""
    return f"[{fmt(target.spread.min, target.unit)} .. {fmt(target.spread.max, target.unit)}]"


def render_text(sections: Sequence[Section]) -> str:
    lines: list[str] = []
    for section in sections:
        lines += ["", f"== {section.title}"]
        rows = [
            [
                m.name,
                fmt(m.summary.median, m.unit),
                fmt(m.summary.min, m.unit),
                fmt(m.summary.max, m.unit),
                str(m.summary.n),
                m.note,
            ]
            for m in section.measurements
        ]
        lines += _table(["measurement", "median", "min", "max", "n", "note"], rows, "lrrrrl")
        if section.targets:
            lines.append("")
            trows = [
                [t.verdict, t.name, _value(t), _spread(t), "" if t.limit is None else fmt(t.limit, t.unit), t.rule]
                for t in section.targets
            ]
            lines += _table(["result", "target", "value", "[min .. max]", "limit", "rule"], trows, "llrlrl")
        for note in section.notes:
            lines += ["", note]
    return "\n".join(lines)


def verdict_counts(sections: Sequence[Section]) -> dict[str, int]:
    counts = {PASS: 0, FAIL: 0}
    for section in sections:
        for target in section.targets:
            if target.verdict in counts:
                counts[target.verdict] += 1
    return counts


# -- Markdown for docs/performance.md ------------------------------------------------------
def render_markdown(sections: Sequence[Section], facts: dict[str, Any], busy_note: str) -> str:
    counts = verdict_counts(sections)
    lines = [
        "## Performance",
        "",
        f"`nox -s bench` (SGLang {facts.get('sglang')}, family `{facts.get('family')}`, torch {facts.get('torch')}, "
        f"Python {facts['python']}) on {facts['cpu_model']}, {facts['cpu_count']} cores, {facts['date'][:10]}. "
        "Medians with [min .. max]; every comparison is measured side by side in the same run "
        "(interleaved rounds, differences and ratios paired per round).",
    ]
    if busy_note:
        lines += ["", busy_note]
    lines += ["", "| what | median [min .. max] | target | result |", "|---|---|---|---|"]
    for section in sections:
        for t in section.targets:
            lines.append(f"| {t.name} | {_value(t)} {_spread(t)} | {_md(t.rule)} | {t.verdict} |")
    lines += ["", f"{counts[PASS]} targets pass, {counts[FAIL]} fail."]
    return "\n".join(lines)


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def write_json(out_dir: Path, sections: Sequence[Section], facts: dict[str, Any], settings: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out_dir / f"bench-sglang-{facts.get('sglang', 'unknown')}-{stamp}.json"
    data = {
        "machine": facts,
        "settings": settings,
        "verdicts": verdict_counts(sections),
        "sections": [s.as_dict() for s in sections],
    }
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return path
