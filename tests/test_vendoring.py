"""Vendoring: a framework's private copy (``fakerl/_vendor/sglang_roll_compat``) and the top-level
package in one interpreter cooperate: the patches land once (one wrapper layer on each target),
both copies' ``status()`` agree, and ``unpatch()`` from either copy restores every original object.
The package only imports itself relatively, so such a copy never reaches for the top-level one.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import _figures
import pytest
from test_reliability import finish, make_synthetic_sglang, real_result, start_driver

VENDORED = "fakerl._vendor.sglang_roll_compat"
REAL_STEPS = [
    "import:vendored",
    "import:engine",
    "import:top",
    "unpatch:top",
    "patch:vendored",
    "patch:top",
    "unpatch:vendored",
]
REAL_EXPECTATIONS = [
    ("pending", "V"),
    ("patched", "V"),
    ("patched", "V"),
    ("original", ""),
    ("patched", "V"),
    ("patched", "V"),
    ("original", ""),
]
_CHECKED: dict[str, list[int]] = {}


def _count(suite: str, steps: list[str]) -> None:
    scenarios, checked = _CHECKED.setdefault(suite, [0, 0])
    _CHECKED[suite] = [scenarios + 1, checked + len(steps)]
    _figures.note(suite, scenarios=scenarios + 1, steps_checked=checked + len(steps), max_wrapper_layers=1)


def installed_package_dir() -> Path:
    spec = importlib.util.find_spec("sglang_roll_compat")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def make_vendored_copy(root: Path) -> Path:
    """``root/fakerl/_vendor/sglang_roll_compat``: a copy of the installed package; returns ``root``."""
    vendor = root / "fakerl" / "_vendor"
    vendor.mkdir(parents=True)
    (root / "fakerl" / "__init__.py").write_text('"""A fake RL framework that vendors sglang_roll_compat."""\n')
    (vendor / "__init__.py").write_text("")
    shutil.copytree(
        installed_package_dir(), vendor / "sglang_roll_compat", ignore=shutil.ignore_patterns("__pycache__")
    )
    return root


def vendoring_driver(steps: list[str], vendored_name: str) -> dict[str, Any]:
    import importlib
    import sys

    import _targets

    engine_name = "sglang.srt.entrypoints.engine"
    snapshots = _targets.watch_originals()  # fires before any patch lands on the module
    copies: dict[str, Any] = {}
    names = {"vendored": vendored_name, "top": "sglang_roll_compat"}

    def targets() -> dict[str, Any]:
        package = copies.get("vendored") or copies.get("top")
        if package is None:
            return {}
        marker_of = package._shared.marker_of
        rows = {}
        for p, current, original in _targets.targets(package.FAMILY.patches, snapshots):
            layers, obj, owners = 0, current, []
            while marker_of(obj) is not None:
                layers += 1
                owners.append(marker_of(obj)["owner"])
                obj = obj.__wrapped__
            rows[p.target] = {"layers": layers, "over_original": obj is original, "owners": owners}
        return rows

    trace = []
    for step in steps:
        action, _, who = step.partition(":")
        reached_before = None
        if action == "import":
            if who == "engine":
                importlib.import_module(engine_name)
            else:
                copies[who] = importlib.import_module(names[who])
        elif action in ("patch", "unpatch"):
            getattr(copies[who], action)()
        elif action == "call":  # through the installed _set_envs_and_config: how many layers run?
            shared = (copies.get("vendored") or copies["top"])._shared.state()
            reached_before = shared.reached.get("set_envs_and_config", 0)
            sys.modules[engine_name]._set_envs_and_config({})
        entry: dict[str, Any] = {"step": step, "targets": targets()}
        for who_, package in copies.items():
            entry[who_] = [s.as_dict() for s in package.status()]
        if reached_before is not None:
            shared = (copies.get("vendored") or copies["top"])._shared.state()
            entry["reached"] = shared.reached.get("set_envs_and_config", 0) - reached_before
        trace.append(entry)
    vendored, top = copies["vendored"], copies["top"]
    return {
        "trace": trace,
        "files": {who: package.__file__ for who, package in copies.items()},
        "distinct_copies": vendored is not top and vendored.patching.Patcher is not top.patching.Patcher,
        "one_shared_state": vendored._shared.state() is top._shared.state(),
        "owners": {"vendored": vendored._PATCHER.owner, "top": top._PATCHER.owner},
    }


def _states(entry: dict[str, Any], who: str) -> set[str]:
    return {s["state"] for s in entry[who]} - {"not needed"}


def check_entry(entry: dict[str, Any], expect: str, owner: str = "", min_targets: int = 5) -> None:
    """``expect``: "patched" (one layer by ``owner`` over each original), "original" or "pending"."""
    step = entry["step"]
    if "vendored" in entry and "top" in entry:
        assert entry["vendored"] == entry["top"], f"{step}: the two copies' status() disagree"
    targets = entry["targets"]
    if expect == "pending":  # the engine module is not imported yet: its patches wait for it
        assert not any(t.startswith("sglang.srt.entrypoints.engine:") for t in targets), entry
        for target, row in targets.items():  # another target module already imported: patched once
            assert row["over_original"] and row["layers"] == 1 and row["owners"] == [owner], (step, target, row)
        for who in ("vendored", "top"):
            if who in entry:
                assert "pending import" in _states(entry, who) <= {"pending import", "applied"}, entry
        return
    assert len(targets) >= min_targets, (step, targets)
    for target, row in targets.items():
        assert row["over_original"], (step, target, row)
        if expect == "patched":
            assert row["layers"] == 1 and row["owners"] == [owner], (step, target, row)
        else:
            assert row["layers"] == 0, (step, target, row)
    for who in ("vendored", "top"):
        if who in entry:
            states = _states(entry, who)
            if expect == "patched":
                assert "applied" in states and states <= {"applied", "pending import"}, (step, who, states)
                assert {s["owner"] for s in entry[who] if s["state"] == "applied"} == {owner}
            else:
                assert states == {"off"}, (step, who, entry[who])


# The scenarios: (steps, what each step must leave), "V"/"T" = the vendored/top-level copy's owner
SCENARIOS = {
    "vendored-first": (
        [
            "import:vendored",
            "import:engine",
            "import:top",
            "call:-",
            "unpatch:top",
            "patch:vendored",
            "patch:top",
            "unpatch:vendored",
        ],
        [
            ("pending", "V"),
            ("patched", "V"),
            ("patched", "V"),
            ("patched", "V"),
            ("original", ""),
            ("patched", "V"),
            ("patched", "V"),
            ("original", ""),
        ],
    ),
    "top-first-engine-later": (
        [
            "import:top",
            "import:vendored",
            "unpatch:vendored",
            "import:engine",
            "patch:top",
            "patch:vendored",
            "call:-",
            "unpatch:top",
        ],
        [
            ("pending", "T"),
            ("pending", "T"),
            ("off", ""),
            ("original", ""),
            ("patched", "T"),
            ("patched", "T"),
            ("patched", "T"),
            ("original", ""),
        ],
    ),
    "engine-first": (
        ["import:engine", "import:vendored", "import:top", "unpatch:vendored", "patch:top", "unpatch:vendored"],
        [("none", ""), ("patched", "V"), ("patched", "V"), ("original", ""), ("patched", "T"), ("original", "")],
    ),
}


def _check_trace(result: dict[str, Any], expectations: list[tuple[str, str]], min_targets: int) -> None:
    assert result["distinct_copies"] and result["one_shared_state"]
    assert result["files"]["vendored"].endswith("fakerl/_vendor/sglang_roll_compat/__init__.py")
    assert result["files"]["top"] == str(installed_package_dir() / "__init__.py")
    owners = {"V": result["owners"]["vendored"], "T": result["owners"]["top"]}
    assert owners == {"V": VENDORED, "T": "sglang_roll_compat"}
    for entry, (expect, who) in zip(result["trace"], expectations, strict=True):
        if expect == "none":
            continue
        if expect == "off":  # the engine module not imported yet, and nothing wanted any more
            assert all(row["layers"] == 0 and row["over_original"] for row in entry["targets"].values()), entry
            assert _states(entry, "vendored") == _states(entry, "top") == {"off"}, entry
            continue
        check_entry(entry, expect, owners.get(who, ""), min_targets)
        if "reached" in entry:
            assert entry["reached"] == 1, "the call went through exactly one wrapper"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_vendored_copy_and_the_top_level_package_cooperate(tmp_path: Path, scenario: str) -> None:
    synthetic = make_synthetic_sglang(tmp_path / "synthetic-sglang")
    root = make_vendored_copy(tmp_path / "fw")
    steps, expectations = SCENARIOS[scenario]
    env = {"SGLANG_ROLL_COMPAT_CACHE_DIR": str(tmp_path / "cache")}
    result = finish(
        start_driver(vendoring_driver, {"steps": steps, "vendored_name": VENDORED}, prepend=[root, synthetic], env=env)
    )
    _check_trace(result, expectations, min_targets=6)
    _count("vendoring (two copies, synthetic engine)", steps)


@pytest.mark.sglang
def test_a_vendored_copy_cooperates_on_the_real_engine_module(tmp_path_factory: pytest.TempPathFactory) -> None:
    # a job of test_reliability's real-SGLang probe process (forked: nothing of ours imported yet)
    _check_trace(real_result(tmp_path_factory, "vendoring"), REAL_EXPECTATIONS, min_targets=5)
    _count("vendoring (two copies, real engine)", REAL_STEPS)


def _absolute_self_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                f"{path}:{node.lineno}: import {a.name}"
                for a in node.names
                if a.name.split(".")[0] == "sglang_roll_compat"
            ]
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "sglang_roll_compat"
        ):
            found.append(f"{path}:{node.lineno}: from {node.module} import ...")
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).split(".")[0] == "sglang_roll_compat"
        ):
            found.append(f"{path}:{node.lineno}: import_module({node.args[0].value!r})")
    return found


def test_the_package_imports_itself_only_relatively() -> None:
    # the source tree (an installed copy may carry stale modules from an old build/ directory)
    package = Path(__file__).resolve().parent.parent / "sglang_roll_compat"
    files = sorted(package.rglob("*.py"))
    assert len(files) > 20 and package / "launch.py" in files
    offenders = [line for path in files for line in _absolute_self_imports(path)]
    assert offenders == [], "absolute self-imports break a vendored copy:\n" + "\n".join(offenders)


def test_the_self_import_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import sglang_roll_compat.launch\nfrom sglang_roll_compat import patching\nfrom . import ok\n")
    assert len(_absolute_self_imports(bad)) == 2
