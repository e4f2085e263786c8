"""``python -m sglang_roll_compat``: the doctor and its exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import child_env, run_isolated

import sglang_roll_compat


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return run_isolated([sys.executable, "-P", "-m", "sglang_roll_compat", *args], env=child_env(), timeout=timeout)


def test_doctor_json_without_importing_the_engine() -> None:
    result = _run("--json", "--no-import")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "supported"
    assert report["sglang"]["version"] == sglang_roll_compat.SELECTION.installed.version
    assert report["family"]["name"] == sglang_roll_compat.FAMILY.name
    assert [row["version"] for row in report["support_matrix"]] == list(sglang_roll_compat.supported_versions())
    states = {p["name"]: p["state"] for p in report["patches"]}
    for p in sglang_roll_compat.FAMILY.patches:
        assert states[p.name] == ("not needed" if p.not_needed else "pending import")


def test_doctor_text_names_the_verdict_and_the_matrix() -> None:
    result = _run("--no-import")
    assert result.returncode == 0, result.stderr
    assert "verdict:  SUPPORTED" in result.stdout
    assert "Supported SGLang versions:" in result.stdout
    assert sglang_roll_compat.FAMILY.name in result.stdout


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.sglang
def test_doctor_imports_the_engine_and_reports_patches_applied() -> None:
    result = _run("--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["engine_module"] == "imported"
    states = {p["name"]: p["state"] for p in report["patches"]}
    for p in sglang_roll_compat.FAMILY.patches:
        assert states[p.name] == ("not needed" if p.not_needed else "applied"), p.name
    assert report["torch"]["version"].startswith("2.")


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.sglang
def test_doctor_prints_the_preflight_of_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NCCL_CUMEM_ENABLE", "yes")  # not 0/1: the engine replaces it, the trainer keeps it
    report = json.loads(_run("--json").stdout)
    assert "nccl-cumem-mismatch" in {f["code"] for f in report["preflight"]}
    text = _run()
    assert "Preflight of this process" in text.stdout and "nccl-cumem-mismatch" in text.stdout
    assert "preflight" not in json.loads(_run("--json", "--no-import").stdout)  # kept out of the fast path


def test_versions_command_lists_the_table() -> None:
    result = _run("versions", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["version"] for r in rows] == list(sglang_roll_compat.supported_versions())


def test_unknown_command_is_a_usage_error() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.sglang  # --server-args are checked against the installed ServerArgs
def test_env_command_prints_the_policy_for_one_worker(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    env_root = tmp_path / "cache"
    monkeypatch.setenv("SGLANG_ROLL_COMPAT_CACHE_DIR", str(env_root))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = _run("env", "--worker-name", "../../etc/rollout\n0", "--server-args", '{"tp_size": 2}', "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["family"] == sglang_roll_compat.FAMILY.name
    assert report["worker"]["gpu_ids"] == ["0", "1"]  # tp_size=2 from base_gpu_id 0
    changes = {c["name"]: c for c in report["changes"]}
    workspace = changes["FLASHINFER_WORKSPACE_BASE"]["new"]
    assert changes["FLASHINFER_WORKSPACE_BASE"]["scope"] == "children"
    assert os.path.commonpath([workspace, str(env_root)]) == str(env_root)  # the hostile name stays inside
    assert report["worker"]["slot"] in workspace and ".." not in workspace and "\n" not in workspace
    assert not env_root.exists()  # a plan, not a launch: nothing is created
    text = _run("env", "--worker-name", "rollout-0")
    assert text.returncode == 0 and "FLASHINFER_WORKSPACE_BASE" in text.stdout and "rollout-0" in text.stdout


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_env_command_without_server_args_needs_no_sglang_import() -> None:
    result = _run("env", "--worker-name", "rollout-0", "--json")
    assert result.returncode == 0, result.stderr
    changes = {c["name"]: c for c in json.loads(result.stdout)["changes"]}
    assert "rollout-0" in changes["FLASHINFER_WORKSPACE_BASE"]["new"]


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.sglang
@pytest.mark.parametrize(
    ("server_args", "message"),
    [('{"tp_sise": 2}', "did you mean 'tp_size'"), ("[1]", "must be a JSON object"), ("{", "not valid JSON")],
)
def test_env_command_refuses_bad_server_args(server_args: str, message: str) -> None:
    result = _run("env", "--server-args", server_args)
    assert result.returncode == 1 and message in result.stderr, result.stderr
