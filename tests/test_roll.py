"""``sglang_roll_compat.roll``: what ROLL's ``roll/third_party/sglang`` folder becomes, on a real
SGLang of every pinned release (gate, drop-in ``patch``, env profile, FP8 hook, HTTP mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_python, run_scenario_script

from sglang_roll_compat import FAMILY, SELECTION, envpolicy, launch, workspace
from sglang_roll_compat.roll import env as roll_env

pytestmark = pytest.mark.sglang
HERE = Path(__file__).parent
RELEASE = SELECTION.installed.version
WORKER = "actor_infer-3"
SLOT = workspace.worker_slot(WORKER, ())
_cache: dict[str, dict[str, Any]] = {}


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_the_drop_in_patch_is_sglangs_own_engine_module_imported_on_access() -> None:
    code = """
import sys
from sglang_roll_compat.roll import patch as sglang_patch
from sglang_roll_compat import roll
before = "sglang.srt.entrypoints.engine" in sys.modules
module = sglang_patch.engine.engine_module
import sglang.srt.entrypoints.engine as upstream
from sglang_roll_compat import Engine as Facade
from sglang_roll_compat._shared import marker_of
print(before, module is upstream, module.Engine is upstream.Engine, module.Engine is not Facade,
      bool(marker_of(vars(module.Engine)["__init__"])), roll.armed())
"""
    proc = run_python(code, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "True", "True", "True", "True", "True"]


def test_the_plain_package_arms_no_roll_profile() -> None:
    proc = run_python("import sglang_roll_compat.roll as r, sglang_roll_compat.roll.planner; print(r.armed())")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False"]


@pytest.fixture
def armed() -> Any:
    roll_env.arm()
    yield
    roll_env.disarm()


def _after_upstream(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` as the installed release's upstream ``_set_envs_and_config`` leaves it, for the
    variables the ROLL profile deals with (family data checked against the real source)."""
    after = dict(environ)
    for name, value, _, upstream in roll_env.extras(RELEASE, FAMILY.env):
        if upstream and (name not in after or name == "TF_CPP_MIN_LOG_LEVEL" or name.startswith("TORCH_NCCL")):
            after[name] = value  # forced (TF_CPP, TORCH_NCCL) or set when unset (CUTE_DSL_*)
    return after


def test_family_data_matches_upstream_source() -> None:
    import inspect

    import sglang.srt.entrypoints.engine as engine_mod

    source = inspect.getsource(inspect.unwrap(engine_mod._set_envs_and_config))
    for var in roll_env.ROLL_VARS:
        assert (f'"{var.name}"' in source) == FAMILY.env.sets_upstream(var.name, RELEASE), var.name


def test_roll_profile_sets_what_upstream_does_not_and_reports_why(armed: None) -> None:
    extras, name = launch.profile_env({"WORKER_NAME": WORKER})
    assert name == WORKER
    user: dict[str, str] = {}
    changes = envpolicy.plan(
        {}, _after_upstream(user), envpolicy.Worker(name), user_env=user, facts=FAMILY.env, extras=extras
    )
    by_name = {c.name: c for c in changes if c.name in envpolicy.PROFILE_NAMES}
    expected = {v.name for v in roll_env.ROLL_VARS if v.applies(RELEASE)}
    assert set(by_name) == expected
    assert "TF_CPP_MIN_LOG_LEVEL" in expected
    assert ("CUTE_DSL_LOG_LEVEL" in expected) == (tuple(int(p) for p in RELEASE.split(".")[:3]) >= (0, 5, 4))
    assert ("TORCH_NCCL_AVOID_RECORD_STREAMS" in expected) == RELEASE.startswith("0.4.")
    for change in by_name.values():
        assert change.new == next(v.value for v in roll_env.ROLL_VARS if v.name == change.name)
        if FAMILY.env.sets_upstream(change.name, RELEASE):
            assert change.action == "keep" and "SGLang sets it itself" in change.reason
        else:
            assert change.action == "set" and change.reason.startswith("ROLL")
    slot = next(c for c in changes if c.name == "FLASHINFER_WORKSPACE_BASE").new or ""
    assert f"/{SLOT}/" in slot  # ROLL's WORKER_NAME picks the private per-worker directory


def test_roll_profile_keeps_the_users_values(armed: None) -> None:
    extras, _ = launch.profile_env({})
    user = {v.name: "7" for v in roll_env.ROLL_VARS}
    changes = envpolicy.plan(
        {}, _after_upstream(user), envpolicy.Worker(None), user_env=user, facts=FAMILY.env, extras=extras
    )
    profile = [c for c in changes if c.name in envpolicy.PROFILE_NAMES]
    assert profile and all(c.new == "7" and "your value" in c.reason for c in profile)


def test_control_without_the_profile_no_roll_variable_is_touched() -> None:
    extras, name = launch.profile_env({"WORKER_NAME": WORKER})
    assert (extras, name) == ([], None)


def run_scenario(name: str, tmp_root: Path) -> dict[str, Any]:
    if name in _cache:
        return _cache[name]
    out, probe = tmp_root / f"{name}.json", tmp_root / f"{name}-probe"
    env: dict[str, str | None] = {var.name: None for var in roll_env.ROLL_VARS}
    env["WORKER_NAME"] = WORKER
    proc = run_scenario_script(
        "roll_scenarios.py",
        [name, str(out)],
        probe=probe,
        cache=tmp_root / "cache",
        timeout=480,  # markers come within a minute on an idle machine; a loaded CI box is slower
        env=env,
    )
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result["returncode"], result["stderr"] = proc.returncode, proc.stderr[-4000:]
    result["markers"] = [json.loads(p.read_text()) for p in sorted(probe.glob("fp8-*.json"))]
    _cache[name] = result
    return result


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("roll")


def _assert_child_saw_rewrite_and_env(marker: dict[str, Any]) -> None:
    assert marker["rewritten_by"] == marker["pid"], marker  # SGLang's lookup sees this child's rewrite
    env = marker["env"]
    for var in roll_env.ROLL_VARS:
        # set by ROLL's profile where ROLL sets it, else only where upstream sets it itself (CUTE_DSL_*
        # on 0.5.3 … 0.5.4.post1, with ROLL's value), else not at all
        present = var.applies(RELEASE) or FAMILY.env.sets_upstream(var.name, RELEASE)
        assert env[var.name] == (var.value if present else None), (var.name, env)
    assert f"/{SLOT}/" in (env["FLASHINFER_WORKSPACE_BASE"] or "")


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.launch
@pytest.mark.timeout(600)  # the scenario's own limit is 480 s: its report, not a stack dump
def test_fp8_hook_reaches_the_dp_controller_and_its_schedulers(root: Path) -> None:
    result = run_scenario("engine", root)
    assert result["returncode"] == 0, result["stderr"]
    assert result["engine_imported_before_access"] is False
    assert result["markers_seen"], result
    by_pid = {m["pid"]: m for m in result["markers"]}
    roles = sorted(m["role"] for m in by_pid.values())
    assert "dp_controller" in roles and "scheduler" in roles, (roles, result)
    for marker in by_pid.values():
        _assert_child_saw_rewrite_and_env(marker)


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.launch
@pytest.mark.timeout(600)  # the scenario's own limit is 480 s: its report, not a stack dump
def test_roll_http_mode_server_children_get_the_hooks_and_env(root: Path) -> None:
    result = run_scenario("http", root)
    assert result["markers_seen"], result
    schedulers = [m for m in result["markers"] if m["role"] == "scheduler"]
    assert schedulers, result
    for marker in schedulers:
        _assert_child_saw_rewrite_and_env(marker)


def test_control_the_rewrite_is_not_seen_where_the_hook_did_not_run() -> None:
    import fp8_standin

    assert fp8_standin.sees_rewrite() is None  # this process never ran the hook
