"""``python -m sglang_roll_compat``: the doctor and its exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import package_parent

import sglang_roll_compat


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_parent()), env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-P", "-m", "sglang_roll_compat", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


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


def test_versions_command_lists_the_table() -> None:
    result = _run("versions", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["version"] for r in rows] == list(sglang_roll_compat.supported_versions())


def test_unknown_command_is_a_usage_error() -> None:
    result = _run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
