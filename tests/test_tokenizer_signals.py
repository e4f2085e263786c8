"""The tokenizer manager takes the caller's SIGTERM/SIGQUIT at its first request (main thread);
with the shim the caller's handlers come back. Runs the REAL ``auto_create_handle_loop`` of this
session's release on a bare instance, in a fresh interpreter's main thread."""

from __future__ import annotations

import json
import sys

import pytest
from helpers import child_env, run_isolated

pytestmark = pytest.mark.sglang

SCRIPT = r"""
import asyncio, json, signal, sys
import sglang_roll_compat
if sys.argv[1] == "unpatched":
    sglang_roll_compat.unpatch()
from sglang.srt.managers import tokenizer_manager as tm_mod

def mine(signum, frame):
    pass

signal.signal(signal.SIGTERM, mine)
signal.signal(signal.SIGQUIT, mine)
tm = tm_mod.TokenizerManager.__new__(tm_mod.TokenizerManager)
tm.event_loop = None
tm.no_create_loop = False
tm.asyncio_tasks = set()
tm._chosen_loop = None  # 0.5.4.post2 ... 0.5.6.post2 set it in __init__, which a bare instance skips
if hasattr(tm_mod, "SignalHandler"):  # 0.5.8+ set it in __init__, which a bare instance skips
    tm.signal_handler_class = tm_mod.SignalHandler

async def idle():
    await asyncio.sleep(3600)

tm.handle_loop = idle
tm.sigterm_watchdog = idle
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)
tm_mod.TokenizerManager.auto_create_handle_loop(tm)
loop_handlers = sorted(getattr(loop, "_signal_handlers", {}) or {})
print(json.dumps({
    "sigterm_is_mine": signal.getsignal(signal.SIGTERM) is mine,
    "sigquit_is_mine": signal.getsignal(signal.SIGQUIT) is mine,
    "loop_handlers": [int(s) for s in loop_handlers],
    "reached": {s.name: s.reached for s in sglang_roll_compat.status()}.get("tokenizer_signal_handlers"),
}))
"""


def run(mode: str) -> dict[str, object]:
    proc = run_isolated([sys.executable, "-P", "-c", SCRIPT, mode], env=child_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_the_callers_handlers_come_back() -> None:
    out = run("patched")
    assert out["sigterm_is_mine"] is True
    assert out["sigquit_is_mine"] is True
    assert out["reached"] == 1


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_control_without_the_shim_sglang_takes_them() -> None:
    out = run("unpatched")
    assert out["sigterm_is_mine"] is False
