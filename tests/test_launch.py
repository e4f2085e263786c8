"""A real CPU ``Engine(...)`` launch on every pinned version: its scheduler child fails (no GPU).

Without the shim the child's SIGQUIT makes upstream kill-tree the caller (exit 137, no
traceback); with it the caller gets :class:`EngineLaunchError` carrying the child's error, its
own signal handlers, start method and unrelated children intact, and no SGLang process left.
Each scenario runs in its own interpreter (tests/launch_scenarios.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import run_scenario_script

pytestmark = [pytest.mark.sglang, pytest.mark.launch]

HERE = Path(__file__).parent
_cache: dict[str, dict[str, Any]] = {}


def run_scenario(name: str, tmp_root: Path) -> dict[str, Any]:
    if name in _cache:
        return _cache[name]
    out = tmp_root / f"{name}.json"
    probe_dir = tmp_root / f"{name}-probe"
    proc = run_scenario_script(
        "launch_scenarios.py", [name, str(out)], probe=probe_dir, cache=tmp_root / "cache", timeout=240
    )
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    result["returncode"] = proc.returncode
    result["stderr_tail"] = proc.stderr[-4000:]
    result["hook_markers"] = sorted(p.name for p in probe_dir.iterdir())
    result["hook_payloads"] = [json.loads(p.read_text()) for p in sorted(probe_dir.iterdir())]
    result["cache_dir"] = str(tmp_root / "cache")
    _cache[name] = result
    return result


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("launch")


def _assert_clean_failure(result: dict[str, Any]) -> None:
    assert result.get("survived"), f"caller died (rc={result['returncode']}):\n{result['stderr_tail']}"
    assert result["returncode"] == 0
    assert result["outcome"] == "raised"
    assert result["exception"] == "EngineLaunchError", result.get("traceback")
    assert "NotImplementedError" not in result["mro"]
    # the child's own error reached the caller, quickly
    assert "scheduler" in result["message"]
    assert "Traceback" in result["message"]
    assert result["reports"], "the failing child left a report"
    first = min(r["time"] for r in result["reports"])
    assert result["raised_at"] - first < 5.0
    # the caller's process-global state is its own again
    assert result["start_method_after"] == "fork"
    assert result["sigchld_is_ours"] and result["sigquit_is_ours"]
    # only the processes SGLang started were ended; the bystander kept its exit status
    assert result["children_left"] == []
    assert result["bystander_alive"] is True
    assert result["bystander_returncode"] == -15


def test_main_thread_launch_raises_with_the_childs_error(root: Path) -> None:
    result = run_scenario("main", root)
    _assert_clean_failure(result)
    assert result["status"]["launch_subprocesses"][1] >= 1
    assert result["status"]["set_envs_and_config"][1] >= 1


def test_child_hook_ran_inside_the_scheduler_with_the_policy_env(root: Path) -> None:
    result = run_scenario("main", root)
    roles = {p["role"] for p in result["hook_payloads"]}
    assert roles == {"scheduler"}, result["hook_markers"]
    scheduler = next(p for p in result["hook_payloads"] if p["role"] == "scheduler")
    assert scheduler["pid"] != result["pid"] and scheduler["ppid"] == result["pid"]
    env = scheduler["env"]
    assert env["FLASHINFER_WORKSPACE_BASE"].startswith(result["cache_dir"])
    assert env["TRITON_CACHE_DIR"].startswith(result["cache_dir"])
    assert env["SGLANG_BLOCK_NONZERO_RANK_CHILDREN"] == "0"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] is None


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_off_main_thread_inside_a_running_loop(root: Path) -> None:
    result = run_scenario("thread", root)
    assert result["loop_running"] is True
    _assert_clean_failure(result)
    assert "signal only works in main thread" not in result["message"]
    assert {p["role"] for p in result["hook_payloads"]} == {"scheduler"}


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.parametrize(
    ("scenario", "hook", "cause"),
    [
        ("hook_fails", "childhook_probe:explode", "probe hook exploded on purpose"),
        ("hook_missing", "childhook_probe_nowhere:leave_marker", "No module named 'childhook_probe_nowhere'"),
    ],
    ids=["raises", "fails-to-import"],
)
def test_a_failing_child_hook_fails_the_launch_naming_the_hook(
    root: Path, scenario: str, hook: str, cause: str
) -> None:
    result = run_scenario(scenario, root)
    assert result.get("survived"), result["stderr_tail"]
    assert result["exception"] == "EngineLaunchError"
    assert hook in result["message"]
    assert cause in result["message"]
    assert result["children_left"] == []


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_control_without_the_shim_the_caller_is_killed(root: Path) -> None:
    """Proves the scenario really exercises the failure the shim exists for."""
    result = run_scenario("unpatched", root)
    assert not result.get("survived")
    assert result["returncode"] in (-9, 137, -3, 131), result["stderr_tail"]
