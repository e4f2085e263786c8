"""The env policy observed after the REAL upstream ``_set_envs_and_config`` ran (every version),
on and off the main thread; each scenario runs in its own interpreter (tests/env_scenarios.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, run_isolated

from sglang_roll_compat import FAMILY

pytestmark = pytest.mark.sglang
HERE = Path(__file__).parent


def scenario(name: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    names = ("CUDA_DEVICE_MAX_CONNECTIONS", "NCCL_CUMEM_ENABLE", "NCCL_NVLS_ENABLE", "TRITON_CACHE_MANAGER")
    unset: dict[str, str | None] = dict.fromkeys(names)
    env = child_env(env={"SGLANG_ROLL_COMPAT_CACHE_DIR": str(tmp_path / "cache"), **unset})
    proc = run_isolated([sys.executable, str(HERE / "env_scenarios.py"), name, str(out)], env=env, timeout=180)
    assert out.exists(), proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    result["stderr"] = proc.stderr
    return result


def test_policy_applies_after_upstream(tmp_path: Path) -> None:
    result = scenario("main", tmp_path)
    assert result["outcome"] == "ok", result.get("traceback")
    env = result["env"]
    assert env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"  # upstream forces 4/8; the user's value is back
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"  # parent keeps it (children lose it)
    assert env["NCCL_CUMEM_ENABLE"] == "0"
    assert env["CUDA_MODULE_LOADING"] == "AUTO"
    assert env["SGLANG_BLOCK_NONZERO_RANK_CHILDREN"] == "0"
    assert env["NCCL_NVLS_ENABLE"] == "0"
    if FAMILY.env.trtllm_pdl:
        assert env["TRTLLM_ENABLE_PDL"] == "0"  # the user's opt-out is kept
    # children-only: ours never lands in the parent (which may hold SGLang's own 0.5.18+ default)
    defaults = result["sglang_cache_defaults"]
    assert env["FLASHINFER_WORKSPACE_BASE"] == defaults.get("FLASHINFER_WORKSPACE_BASE")
    assert env["TRITON_CACHE_DIR"] == defaults.get("TRITON_CACHE_DIR")
    assert result["status"]["set_envs_and_config"][1] == 1


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_off_main_thread_in_a_running_loop_does_not_raise(tmp_path: Path) -> None:
    result = scenario("thread", tmp_path)
    assert result["loop_running"] is True
    assert result["outcome"] == "ok", result.get("traceback")
    assert result["env"]["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    if not FAMILY.signals_guarded:
        assert result["status"]["signal_off_main_thread"][1] >= 1


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_control_unpatched_upstream_off_the_main_thread(tmp_path: Path) -> None:
    result = scenario("unpatched_thread", tmp_path)
    if FAMILY.signals_guarded:
        assert result["outcome"] == "ok"  # this release guards itself (reported "not needed")
    else:
        assert result["outcome"] == "ValueError"
        assert "main thread" in result["message"]
    assert result["env"]["CUDA_DEVICE_MAX_CONNECTIONS"] == FAMILY.env.cuda_device_max_connections


@pytest.mark.skipif(not FAMILY.env.triton_cache_manager, reason="only 0.4.6 carries the Triton workaround")
def test_triton_cache_manager_workaround_stays_for_tp2(tmp_path: Path) -> None:
    result = scenario("tp2", tmp_path)
    assert result["outcome"] == "ok", result.get("traceback")
    assert result["env"]["TRITON_CACHE_MANAGER"] == "sglang.srt.utils:CustomCacheManager"
