"""Target 1: what ``import sglang_roll_compat`` costs a process, next to what it avoids.

Six commands, each in a fresh interpreter, interleaved (``_stats.time_processes``):
``pass`` (the interpreter alone), ``import sglang_roll_compat``, the eager approach (``import
sglang.srt.entrypoints.engine``, what ROLL's version dispatcher does), a plain ``import sglang``,
``import wrapt`` alone (wrapt 2.x imports asyncio and importlib.metadata itself: its share is shown)
and ours followed by the engine module. Our added cost is ``(ours - pass)``, per round; the targets
compare it with the eager import and with a plain ``import sglang`` (each minus ``pass``): shown
as info. What a user really pays is the time target: they import SGLang's engine module anyway,
so ours first, then the engine module, against the engine module alone (``(both - engine) /
engine`` per round, at most 0.5%); the modules only the pair imports are listed beside it.

Two probes run in one more interpreter: the package-metadata lookups made during our import
(every ``importlib.metadata`` entry point, and every ``find_distributions`` scan underneath) and
the heavy modules (``sglang``, ``sglang.*``, ``torch*``) in ``sys.modules`` afterwards. When the
time target is missed, ``-X importtime`` says what dominates.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ._stats import INFO, BenchError, Measurement, ProcessTimes, Section, Summary, Target, differences

PASS_CMD, OURS, EAGER, PLAIN = "python -c pass", "import sglang_roll_compat", "import engine module", "import sglang"
WRAPT = "import wrapt"
BOTH = "import sglang_roll_compat + engine module"
_ENGINE = "import sglang.srt.entrypoints.engine"

EAGER_SHARE = 0.01  # our added cost <= 1% of the eager approach
PLAIN_SHARE = 0.25  # ... and <= 25% of a plain import sglang
MAX_LOOKUPS = 1
ON_TOP_SHARE = 0.005  # ours imported before the engine module a user imports anyway: <= 0.5% more

_PROBE = r"""
import importlib.metadata as md, json, sys
calls, scans, depth = [], [0], [0]

def counting(name, func):
    def wrapper(*args, **kwargs):
        if depth[0] == 0:
            calls.append(name + "(" + ", ".join(map(repr, args)) + ")")
        depth[0] += 1
        try:
            return func(*args, **kwargs)
        finally:
            depth[0] -= 1
    return wrapper

for name in ("distribution", "distributions", "version", "metadata", "requires", "files",
             "entry_points", "packages_distributions"):
    setattr(md, name, counting(name, getattr(md, name)))
for finder in sys.meta_path:  # every lookup, whatever its API, ends in a find_distributions scan
    found = getattr(finder, "find_distributions", None)
    if found is not None:
        def scan(*args, _found=found, **kwargs):
            scans[0] += 1
            return _found(*args, **kwargs)
        try:
            setattr(finder, "find_distributions", scan)
        except (AttributeError, TypeError):
            pass

before = set(sys.modules)
import sglang_roll_compat
added = sorted(set(sys.modules) - before)
heavy = sorted(m for m in sys.modules if m == "sglang" or m.startswith(("sglang.", "torch")))
print(json.dumps({
    "metadata_calls": calls,
    "find_distributions_scans": scans[0],
    "heavy_modules": heavy,
    "modules_added": len(added),
    "pkg_resources": "pkg_resources" in sys.modules,
    "package_file": sglang_roll_compat.__file__,
    "family": sglang_roll_compat.FAMILY.name,
}))
"""


def commands(python: str) -> dict[str, list[str]]:
    return {
        PASS_CMD: [python, "-c", "pass"],
        OURS: [python, "-c", "import sglang_roll_compat"],
        EAGER: [python, "-c", "import sglang.srt.entrypoints.engine"],
        PLAIN: [python, "-c", "import sglang"],
        WRAPT: [python, "-c", "import wrapt"],  # the one dependency the patches are built on
        BOTH: [python, "-c", f"import sglang_roll_compat; {_ENGINE}"],  # what a user really pays
    }


def probe(python: str, *, env: Mapping[str, str] | None, cwd: str | None) -> dict[str, Any]:
    proc = subprocess.run([python, "-c", _PROBE], env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"the import probe failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


# -- python -X importtime, read as a tree -----------------------------------------------------------
@dataclass
class ImportNode:
    name: str
    level: int
    self_us: int
    cumulative_us: int
    parent: str = ""


def parse_importtime(stderr: str, top: str) -> list[ImportNode]:
    """The subtree of ``top`` (a top-level import) in ``-X importtime`` output, with parents."""
    nodes: list[ImportNode] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_part, cum_part, name_part = line.split(":", 1)[1].split("|", 2)
        if not self_part.strip().isdigit():
            continue  # the header line
        stripped = name_part.lstrip()
        level = (len(name_part) - len(stripped) - 1) // 2
        nodes.append(ImportNode(stripped.strip(), level, int(self_part), int(cum_part)))
    # post-order: children come before their parent; a node's parent is the next node one level up
    for i, node in enumerate(nodes):
        for later in nodes[i + 1 :]:
            if later.level == node.level - 1:
                node.parent = later.name
                break
            if later.level < node.level - 1:
                break
    end = max((i for i, n in enumerate(nodes) if n.level == 0 and n.name == top), default=-1)
    if end < 0:
        return []
    start = end
    while start > 0 and nodes[start - 1].level > 0:
        start -= 1
    return nodes[start : end + 1]


def profile(python: str, *, env: Mapping[str, str] | None, cwd: str | None, runs: int = 5) -> dict[str, Any]:
    """What dominates ``import sglang_roll_compat``: per import edge from our package into another
    one (``ours -> theirs``), the cumulative time (median of ``runs`` ``-X importtime`` runs),
    with the costliest package boundaries crossed underneath each (``wrapt`` -> ``asyncio``)."""
    per_edge: dict[str, list[int]] = {}
    below: dict[str, dict[str, list[int]]] = {}
    totals: list[int] = []
    for _ in range(runs):
        proc = subprocess.run(
            [python, "-X", "importtime", "-c", "import sglang_roll_compat"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"python -X importtime failed:\n{proc.stderr[-2000:]}")
        nodes = parse_importtime(proc.stderr, "sglang_roll_compat")
        if not nodes:
            continue
        totals.append(nodes[-1].cumulative_us)
        by_name = {n.name: n for n in nodes}
        first_party = {n.name for n in nodes if n.name.split(".")[0] == "sglang_roll_compat"}
        for node in nodes:
            if node.name in first_party or node.parent not in first_party:
                continue
            edge = f"{node.parent} -> {node.name}"
            per_edge.setdefault(edge, []).append(node.cumulative_us)
            kids = below.setdefault(edge, {})
            for child in nodes:  # the package boundaries crossed below it (wrapt -> asyncio, say)
                if child.name != node.name and _descends(child, node.name, by_name) and _crosses(child, by_name):
                    kids.setdefault(child.name, []).append(child.cumulative_us)
        own = sum(n.self_us for n in nodes if n.name in first_party)
        per_edge.setdefault("(our own modules, self time)", []).append(own)
    rows: list[dict[str, Any]] = []
    for edge, values in per_edge.items():
        heavy = sorted(
            ((name, statistics.median(v)) for name, v in below.get(edge, {}).items()), key=lambda kv: -kv[1]
        )[:3]
        rows.append(
            {
                "edge": edge,
                "cumulative_ms": statistics.median(values) / 1e3,
                "heaviest_below": [{"module": n, "cumulative_ms": v / 1e3} for n, v in heavy],
            }
        )
    rows.sort(key=lambda r: -float(r["cumulative_ms"]))
    return {"total_ms": statistics.median(totals) / 1e3 if totals else None, "runs": runs, "edges": rows[:10]}


def _crosses(node: ImportNode, by_name: Mapping[str, ImportNode]) -> bool:
    parent = by_name.get(node.parent)
    return parent is not None and parent.name.split(".")[0] != node.name.split(".")[0]


def _descends(node: ImportNode, ancestor: str, by_name: Mapping[str, ImportNode]) -> bool:
    seen = 0
    current = node
    while current.parent and seen < 64:
        if current.parent == ancestor:
            return True
        parent = by_name.get(current.parent)
        if parent is None:
            return False
        current, seen = parent, seen + 1
    return False


# -- evaluation -------------------------------------------------------------------------------------
def evaluate(times: ProcessTimes, python: str, *, env: Mapping[str, str] | None, cwd: str | None) -> Section:
    section = Section("imports", "1. Import cost (whole process, fresh interpreter per run, interleaved)")
    wall, cpu = times.wall, times.cpu
    runs = len(wall[PASS_CMD])
    for name, label in (
        (PASS_CMD, "python -c pass"),
        (OURS, "python -c 'import sglang_roll_compat'"),
        (EAGER, "python -c 'import sglang.srt.entrypoints.engine' (eager)"),
        (PLAIN, "python -c 'import sglang'"),
        (WRAPT, "python -c 'import wrapt'"),
        (BOTH, f"python -c 'import sglang_roll_compat; {_ENGINE}'"),
    ):
        section.measurements.append(Measurement(label, Summary.of(wall[name]), "ms", "wall"))
    added, eager, plain = (differences(wall[PASS_CMD], wall[k]) for k in (OURS, EAGER, PLAIN))
    section.measurements += [
        Measurement("added by import sglang_roll_compat (ours - pass)", Summary.of(added), "ms", "wall, paired"),
        Measurement("eager import (engine - pass)", Summary.of(eager), "ms", "wall, paired"),
        Measurement("plain import sglang (sglang - pass)", Summary.of(plain), "ms", "wall, paired"),
        Measurement("added / eager", Summary.of(_per_round(added, eager)), "x", "wall, per round"),
        Measurement("added / plain import sglang", Summary.of(_per_round(added, plain)), "x", "wall, per round"),
    ]
    wrapt_added = differences(wall[PASS_CMD], wall[WRAPT])
    own = differences(wall[WRAPT], wall[OURS])
    section.measurements += [
        Measurement("of which import wrapt alone (wrapt - pass)", Summary.of(wrapt_added), "ms", "wall, paired"),
        Measurement("of which ours beyond wrapt (ours - wrapt)", Summary.of(own), "ms", "wall, paired"),
        Measurement("ours beyond wrapt / eager", Summary.of(_per_round(own, eager)), "x", "wall, per round"),
    ]
    cpu_added, cpu_eager, cpu_plain = (differences(cpu[PASS_CMD], cpu[k]) for k in (OURS, EAGER, PLAIN))
    section.measurements += [
        Measurement("CPU time added by import sglang_roll_compat", Summary.of(cpu_added), "ms", "user+sys, paired"),
        Measurement("CPU time: added / eager", Summary.of(_per_round(cpu_added, cpu_eager)), "x", "user+sys"),
        Measurement(
            "CPU time: added / plain import sglang", Summary.of(_per_round(cpu_added, cpu_plain)), "x", "user+sys"
        ),
    ]
    added_m, eager_m, plain_m = (statistics.median(x) for x in (added, eager, plain))
    # standalone figures: info (issue 16); the target is the cost on top of the engine module below
    section.targets += [
        Target(
            "import: added cost vs the eager approach (standalone)",
            added_m,
            None,
            "ms",
            f"info: ratio {statistics.median(_per_round(added, eager)):.2%} of importing the engine module "
            f"({eager_m * 1e3:.0f} ms; CPU time: {statistics.median(_per_round(cpu_added, cpu_eager)):.2%}); "
            f"the old budget was {EAGER_SHARE:.0%}",
            INFO,
            Summary.of(added),
        ),
        Target(
            "import: added cost vs a plain import sglang (standalone)",
            added_m,
            None,
            "ms",
            f"info: ratio {statistics.median(_per_round(added, plain)):.1%} of a plain import sglang "
            f"({plain_m * 1e3:.0f} ms; CPU time: {statistics.median(_per_round(cpu_added, cpu_plain)):.1%}); "
            f"the old budget was {PLAIN_SHARE:.0%}",
            INFO,
            Summary.of(added),
        ),
    ]
    own_m, wrapt_m = statistics.median(own), statistics.median(wrapt_added)
    section.targets.append(
        Target(
            "import: added cost beyond wrapt's own import vs the eager approach",
            own_m,
            None,
            "ms",
            f"ratio {statistics.median(_per_round(own, eager)):.2%} of the eager import; `import wrapt` "
            f"({_wrapt_version(python, env=env, cwd=cwd)}) alone adds {wrapt_m * 1e3:.1f} ms "
            f"= {wrapt_m / eager_m:.2%}",
            INFO,
            Summary.of(own),
        )
    )
    section.targets.append(_on_top_target(wall, cpu, python, env=env, cwd=cwd))
    found = probe(python, env=env, cwd=cwd)
    lookups = len(found["metadata_calls"])
    section.targets.append(
        Target.at_most(
            "import: package-metadata lookups",
            lookups,
            MAX_LOOKUPS,
            "count",
            f"<= {MAX_LOOKUPS} importlib.metadata lookup "
            f"(seen: {', '.join(found['metadata_calls']) or 'none'}; "
            f"find_distributions scans: {found['find_distributions_scans']})",
        )
    )
    heavy = found["heavy_modules"]
    section.targets.append(
        Target(
            "import: SGLang/torch modules imported by us",
            len(heavy),
            0,
            "count",
            "none of sglang, sglang.*, torch* in sys.modules" + (f" (found: {', '.join(heavy[:8])})" if heavy else ""),
            "PASS" if not heavy else "FAIL",
        )
    )
    section.extra["probe"] = found
    section.extra["runs"] = runs
    section.notes.append(
        f"{runs} runs per command, one untimed warm-up round; differences and ratios are paired per round. "
        f"The targets use wall time; CPU time (user+sys of the child) is shown beside it, as it "
        f"suffers far less from a busy machine. `import sglang_roll_compat` adds {found['modules_added']} "
        f"modules; pkg_resources imported: {'yes' if found['pkg_resources'] else 'no'}; measured copy: "
        f"{found['package_file']}."
    )
    over_budget = added_m > EAGER_SHARE * eager_m or added_m > PLAIN_SHARE * plain_m
    if over_budget or any(t.verdict == "FAIL" for t in section.targets):
        prof = profile(python, env=env, cwd=cwd)
        section.extra["profile"] = prof
        section.notes.append(_profile_note(prof))
    else:
        section.notes.append("The time target met and the standalone figures within the old budgets: no profile.")
    return section


def _on_top_target(
    wall: Mapping[str, Sequence[float]],
    cpu: Mapping[str, Sequence[float]],
    python: str,
    *,
    env: Mapping[str, str] | None,
    cwd: str | None,
) -> Target:
    """The cost a user adds: ours imported first, then the engine module they import anyway (modules
    such as asyncio are then shared), against the engine module alone, paired per round."""
    on_top = _per_round(differences(wall[EAGER], wall[BOTH]), list(wall[EAGER]))
    cpu_on_top = _per_round(differences(cpu[EAGER], cpu[BOTH]), list(cpu[EAGER]))
    ratio = statistics.median(on_top)
    extra = _modules_added_on_top(python, env=env, cwd=cwd)
    return Target.at_most(
        "import: ours on top of the engine module, vs the engine module alone",
        ratio,
        ON_TOP_SHARE,
        "x",
        f"<= {ON_TOP_SHARE:.1%}: (both - engine) / engine per round, wall; CPU time "
        f"{statistics.median(cpu_on_top):.2%}; modules (not ours) only the pair imports: {len(extra)}"
        + (f" ({', '.join(extra[:8])}{', ...' if len(extra) > 8 else ''})" if extra else ""),
        Summary.of(on_top),
    )


def _modules_added_on_top(python: str, *, env: Mapping[str, str] | None, cwd: str | None) -> list[str]:
    """Modules, not ours, in ``sys.modules`` after ours + the engine module that the engine module
    alone lacks (what our patches pull in beyond the package itself)."""
    listing = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    found = []
    for code in (f"{_ENGINE}; {listing}", f"import sglang_roll_compat; {_ENGINE}; {listing}"):
        proc = subprocess.run([python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise BenchError(f"the module listing failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        found.append(set(json.loads(proc.stdout.strip().splitlines()[-1])))
    return sorted(m for m in found[1] - found[0] if not m.lstrip("_").startswith("sglang_roll_compat"))


def _wrapt_version(python: str, *, env: Mapping[str, str] | None, cwd: str | None) -> str:
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('wrapt'))"],
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
        check=False,
    )
    return f"wrapt {out.stdout.strip()}" if out.returncode == 0 else "wrapt, version unknown"


def _per_round(part: Sequence[float], whole: Sequence[float]) -> list[float]:
    return [p / w if w > 0 else float("inf") for p, w in zip(part, whole, strict=True)]


def _profile_note(prof: Mapping[str, Any]) -> str:
    lines = [
        f"A time target was missed or a standalone figure is over its old budget; "
        f"`python -X importtime -c 'import sglang_roll_compat'` "
        f"(median of {prof['runs']} runs; importtime inflates absolute times) says the import takes "
        f"{prof['total_ms']:.1f} ms, dominated by:"
    ]
    for row in prof["edges"][:6]:
        heavy = ", ".join(f"{h['module']} {h['cumulative_ms']:.1f} ms" for h in row["heaviest_below"])
        lines.append(f"  {row['cumulative_ms']:6.1f} ms  {row['edge']}" + (f"  [{heavy}]" if heavy else ""))
    return "\n".join(lines)
