"""A real SGLang release we do not test (0.4.5.post3, older than every tested one, installed by
``nox -s test-unsupported``): ``import sglang_roll_compat`` must raise the NotImplementedError that names the fix."""

from __future__ import annotations

import json
import os

import pytest
from helpers import run_python

EXPECTED = os.environ.get("SGLANG_ROLL_COMPAT_EXPECT_UNSUPPORTED")
pytestmark = pytest.mark.skipif(not EXPECTED, reason="runs in the test-unsupported nox session")

CODE = """
import json
try:
    import sglang_roll_compat
except NotImplementedError as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc), "found": exc.found}))
"""


def test_import_refuses_the_real_untested_release() -> None:
    result = run_python(CODE)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["type"] == "UnsupportedVersionError"
    assert out["found"] == EXPECTED
    assert f"SGLang {EXPECTED!r}" in out["message"]
    assert "0.4.6" in out["message"] and "0.5.7" in out["message"]
    assert "Fix: pip install 'sglang==" in out["message"]


def test_the_doctor_reports_unsupported_with_exit_code_2() -> None:
    import sys

    from helpers import child_env, run_isolated

    result = run_isolated([sys.executable, "-P", "-m", "sglang_roll_compat", "--json"], env=child_env(), timeout=120)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "unsupported"
    assert report["sglang"]["version"] == EXPECTED


def test_rolls_drop_in_patch_refuses_it_too_without_importing_sglangs_engine() -> None:
    code = """
import json, sys
try:
    from sglang_roll_compat.roll import patch as sglang_patch
except NotImplementedError as exc:
    print(json.dumps({"type": type(exc).__name__, "found": exc.found,
                      "engine": "sglang.srt.entrypoints.engine" in sys.modules}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"type": "UnsupportedVersionError", "found": EXPECTED, "engine": False}
