"""Test-session setup.

* In a ``test-sglang-<v>`` session the real SGLang ``<v>`` must be installed
  (``SGLANG_ROLL_COMPAT_EXPECT_SGLANG``); a missing or different one fails the run instead of
  skipping tests.
* Without SGLang (the ``unit`` session) a metadata-only fake install of the default version is
  put first on ``sys.path`` so the package imports; tests marked ``sglang`` are skipped there.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_launch
import helpers

pytest_plugins = ["_figures"]

EXPECTED = os.environ.get("SGLANG_ROLL_COMPAT_EXPECT_SGLANG", "")
REAL_SGLANG = importlib.util.find_spec("sglang") is not None
UNIT = not REAL_SGLANG

if EXPECTED:
    if not REAL_SGLANG:
        raise pytest.UsageError(f"SGLang {EXPECTED} is expected in this session but not installed")
    import importlib.metadata

    installed = importlib.metadata.version("sglang")
    if installed != EXPECTED:
        raise pytest.UsageError(f"SGLang {EXPECTED} is expected in this session, found {installed}")

if UNIT:
    _fake_root = Path(tempfile.mkdtemp(prefix="fake-sglang-"))
    helpers.make_fake_sglang(_fake_root, helpers.DEFAULT_FAKE_VERSION)
    sys.path.insert(0, str(_fake_root))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_fake_root), os.environ.get("PYTHONPATH", "")]))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not UNIT:
        return
    skip = pytest.mark.skip(reason="needs a real SGLang (runs in the test-sglang-<version> sessions)")
    for item in items:
        if "sglang" in item.keywords or "launch" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    if UNIT:
        return f"sglang: none (metadata-only fake {helpers.DEFAULT_FAKE_VERSION} for the gate)"
    import importlib.metadata

    return f"sglang: {importlib.metadata.version('sglang')} (real)"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> fake_launch.FakeLaunch:
    """The real upstream Engine class with only its launch boundary faked (tests/fake_launch.py);
    a private cache root per test."""
    monkeypatch.setenv("SGLANG_ROLL_COMPAT_CACHE_DIR", str(tmp_path / "cache"))
    return fake_launch.install(monkeypatch)
