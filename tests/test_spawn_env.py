"""Two engines launched from two threads: SGLang's LD_PRELOAD edit around each child's start.

Upstream starts every scheduler inside ``memory_saver_adapter.configure_subprocess()``; with
``enable_memory_saver`` that is torch_memory_saver's context manager, which prepends its hook to
``LD_PRELOAD`` and restores the old value on exit. torch_memory_saver is a CUDA-only package, so
its context manager is replaced here by one that edits the environment the same way (read,
prepend, hold while the child starts, restore); the adapter class and our patch are real.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import sglang_roll_compat
from sglang_roll_compat import FAMILY

pytestmark = pytest.mark.sglang

HOOK = "/opt/tms/torch_memory_saver_hook_mode_preload.so"


class FakeTorchMemorySaver:
    """What the adapter calls: ``torch_memory_saver.configure_subprocess()``."""

    @staticmethod
    @contextlib.contextmanager
    def configure_subprocess() -> Iterator[None]:
        current = os.environ.get("LD_PRELOAD", "")
        os.environ["LD_PRELOAD"] = f"{HOOK}:{current}" if current else HOOK
        try:
            time.sleep(0.2)  # the child's start: pickling, fork/exec
            yield
        finally:
            if current:
                os.environ["LD_PRELOAD"] = current
            else:
                os.environ.pop("LD_PRELOAD", None)


def _two_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two threads 'start a child' 50 ms apart; returns the LD_PRELOAD each child would inherit."""
    adapter_mod = importlib.import_module(FAMILY.memory_saver_module)
    monkeypatch.setattr(adapter_mod, "torch_memory_saver", FakeTorchMemorySaver, raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    adapter = adapter_mod._TorchMemorySaverAdapterReal()
    seen: list[str] = []

    def start(delay: float) -> None:
        time.sleep(delay)
        with adapter.configure_subprocess():
            seen.append(os.environ.get("LD_PRELOAD", ""))

    threads = [threading.Thread(target=start, args=(d,)) for d in (0.0, 0.05)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return seen


def test_two_threads_starting_children_each_pass_the_hook_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sglang_roll_compat.patch()
    importlib.import_module(FAMILY.memory_saver_module)
    states = {s.name: s.state for s in sglang_roll_compat.status()}
    assert states["subprocess_env_lock"] == "applied"
    seen = _two_starts(monkeypatch)
    assert seen == [HOOK, HOOK]
    assert "LD_PRELOAD" not in os.environ  # the caller's environment is as it was


def test_control_without_the_patch_a_child_gets_the_hook_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    importlib.import_module(FAMILY.memory_saver_module)
    sglang_roll_compat.unpatch()
    try:
        seen = _two_starts(monkeypatch)
    finally:
        sglang_roll_compat.patch()
    assert f"{HOOK}:{HOOK}" in seen  # what made torch_memory_saver refuse to start on the GPU


def test_the_lock_is_shared_by_every_copy_and_reentrant() -> None:
    from sglang_roll_compat import _shared, launch

    lock: Any = launch.spawn_env_lock()
    assert lock is _shared.state().spawn_env_lock
    with lock, lock:  # upstream nests numa_utils.configure_subprocess inside the same `with`
        pass
