"""The facade against a REAL, running SGLang engine on this CPU machine (the releases whose CPU
path runs: 0.5.2, with torchao; ``SGLANG_ROLL_COMPAT_CPU_ENGINE=1`` in its nox session makes these
tests mandatory there). ``python -m sglang_roll_compat smoke --cpu`` launches the engine from a
non-main thread and checks generation, deterministic weight updates, memory release/resume calls,
the env policy inside the real scheduler child and a clean shutdown; ``--two-engines`` starts two
engines at once from two threads, laid out by the planner, each with its own workspace."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, run_isolated

REQUIRED = os.environ.get("SGLANG_ROLL_COMPAT_CPU_ENGINE") == "1"
pytestmark = [
    pytest.mark.sglang,
    pytest.mark.launch,
    pytest.mark.skipif(not REQUIRED, reason="this release's engine does not run on a CPU (see envs/matrix.toml)"),
]


def smoke(tmp_path: Path, *args: str) -> dict[str, Any]:
    env = child_env(env={"SGLANG_ROLL_COMPAT_CACHE_DIR": str(tmp_path / "cache")})
    out = tmp_path / "out"
    cmd = [sys.executable, "-P", "-m", "sglang_roll_compat", "smoke", "--cpu", "--out", str(out), *args]
    proc = run_isolated(cmd, env=env, timeout=600)
    name = "two-engines.json" if "--two-engines" in args else "smoke.json"
    assert (out / name).exists(), proc.stderr[-4000:]
    result: dict[str, Any] = json.loads((out / name).read_text())
    result["returncode"] = proc.returncode
    return result


def test_a_real_engine_through_the_facade_from_a_worker_thread(tmp_path: Path) -> None:
    result = smoke(tmp_path)
    failed = {k: v for k, v in result["steps"].items() if not v["ok"]}
    assert not failed, failed
    assert result["main_thread"] is False
    for check, ok in result["checks"].items():
        assert ok, check
    assert result["returncode"] == 0
    tokens = result["numbers"]["tokens"]
    assert tokens["a"] != tokens["b"] and len(tokens["dummy"]) == 8


def test_two_engines_from_two_threads_each_with_its_own_workspace(tmp_path: Path) -> None:
    result = smoke(tmp_path, "--two-engines")
    assert result["ok"], json.dumps({k: v for k, v in result.items() if k != "plan"}, indent=1)[:4000]
    workspaces = {r["scheduler_env"]["FLASHINFER_WORKSPACE_BASE"] for r in result["engines"].values()}
    assert len(workspaces) == 2


def test_weights_from_disk_match_the_same_weights_as_tensors_and_read_back(tmp_path: Path) -> None:
    """A real engine (tests/cpu_weights_probe.py): a safetensors checkpoint the test writes, loaded
    with update_weights_from_disk, generates exactly what a tensor update of the same weights
    generated; get_weights_by_name reads those weights back; the weight version is the one given."""
    # SGLang's own OPT module imports vllm names at module level: without the import stub (only
    # bound, never called: a call would raise) SGLang falls back to its Transformers wrapper,
    # which has no get_weights_by_name
    vllm_stub = Path(__file__).resolve().parent.parent / "envs" / "stubs" / "vllm"
    env = child_env(env={"SGLANG_ROLL_COMPAT_CACHE_DIR": str(tmp_path / "cache")}, last=[vllm_stub])
    probe = Path(__file__).parent / "cpu_weights_probe.py"
    proc = run_isolated([sys.executable, "-P", str(probe), str(tmp_path)], env=env, timeout=600)
    assert (tmp_path / "probe.json").exists(), proc.stderr[-4000:]
    result = json.loads((tmp_path / "probe.json").read_text())
    assert result["tensor_a"] and result["tensor_b"] != result["tensor_a"], result  # control: weights matter
    assert result["disk"][0] is True, result
    assert result["disk_a"] == result["tensor_a"], result
    assert result["weight_version"] == "ckpt-a"
    assert result["weights_by_name_shape"][0] == 3 and result["weights_by_name_max_diff"] < 1e-2, result
    assert "does not exist" in result["missing_path"]
