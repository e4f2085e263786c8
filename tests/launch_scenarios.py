"""Launch a real SGLang Engine on this CPU machine (its scheduler child fails: no GPU) and
record what the caller sees. Run as a script: ``python launch_scenarios.py SCENARIO OUT.json``.

Scenarios: ``main`` (main thread), ``thread`` (a worker thread inside a running asyncio loop),
``hook_fails`` (a child hook that raises), ``unpatched`` (control: the shim's patches removed).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any


def _custom_handler(signum: int, frame: Any) -> None:  # the caller's own handlers
    pass


def _our_children(exclude: set[int]) -> list[dict[str, Any]]:
    import psutil

    tracker = getattr(getattr(multiprocessing, "resource_tracker", None), "_resource_tracker", None)
    tracker_pid = getattr(tracker, "_pid", None)
    out = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in exclude or child.pid == tracker_pid:
            continue
        try:
            out.append({"pid": child.pid, "cmd": " ".join(child.cmdline())[:200], "status": child.status()})
        except psutil.Error:
            continue
    return out


def launch(result: dict[str, Any], hook: str) -> None:
    from helpers import engine_args

    import sglang_roll_compat

    sglang_roll_compat.add_child_hook(hook)
    from sglang.srt.entrypoints.engine import Engine

    started = time.time()
    try:
        Engine(**engine_args(log_level="error"))
        result["outcome"] = "launched"
    except BaseException as exc:
        result["outcome"] = "raised"
        result["exception"] = type(exc).__name__
        result["mro"] = [c.__name__ for c in type(exc).__mro__]
        result["message"] = str(exc)
        result["reports"] = getattr(exc, "reports", [])
        result["traceback"] = traceback.format_exc()[-3000:]
    result["raised_at"] = time.time()
    result["launch_seconds"] = result["raised_at"] - started


def main() -> None:
    scenario, out_path = sys.argv[1], sys.argv[2]
    result: dict[str, Any] = {"scenario": scenario, "pid": os.getpid()}
    multiprocessing.set_start_method("fork", force=True)
    signal.signal(signal.SIGCHLD, _custom_handler)
    signal.signal(signal.SIGQUIT, _custom_handler)
    bystander = subprocess.Popen(["sleep", "120"])

    def write() -> None:
        with open(out_path, "w") as fh:
            json.dump(result, fh)

    import sglang_roll_compat

    if scenario == "unpatched":
        sglang_roll_compat.unpatch()
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
    hook = {
        "hook_fails": "childhook_probe:explode",
        "hook_missing": "childhook_probe_nowhere:leave_marker",  # fails to import in the child
    }.get(scenario, "childhook_probe:leave_marker")
    write()  # if the launch kills us, the file says how far we got
    if scenario == "thread":

        async def in_loop() -> None:
            result["loop_running"] = asyncio.get_running_loop().is_running()
            launch(result, hook)

        worker = threading.Thread(target=lambda: asyncio.run(in_loop()), name="rollout-worker")
        worker.start()
        worker.join()
    else:
        launch(result, hook)
    result["start_method_after"] = multiprocessing.get_start_method(allow_none=True)
    result["sigchld_is_ours"] = signal.getsignal(signal.SIGCHLD) is _custom_handler
    result["sigquit_is_ours"] = signal.getsignal(signal.SIGQUIT) is _custom_handler
    time.sleep(0.5)
    result["children_left"] = _our_children({bystander.pid})
    result["bystander_alive"] = bystander.poll() is None
    bystander.terminate()
    result["bystander_returncode"] = bystander.wait(timeout=10)
    result["status"] = {s.name: [s.state, s.reached] for s in sglang_roll_compat.status()}
    result["survived"] = True
    write()


if __name__ == "__main__":
    main()
