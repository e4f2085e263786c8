"""ROLL's two launch modes on a real SGLang, each in its own interpreter:
``python roll_scenarios.py SCENARIO OUT.json``.

* ``engine``: ROLL's in-process mode through the drop-in ``patch`` (``dp_size=2``, so a DP
  controller starts the schedulers), FP8 stand-in hook registered in the parent;
* ``http``: ROLL's HTTP mode: a ``multiprocessing`` (spawn) child runs
  ``sglang_roll_compat.roll.launch_server`` as ROLL's ``SglangHttpEngine.launch_server`` would.
On this CPU machine the schedulers fail after their hooks ran (``device="cuda"``, no GPU).
"""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import sys
import time
import traceback
from typing import Any

HOOKS = ["fp8_standin:rewrite_from_config", "fp8_standin:record"]


def _kill_tree(pid: int) -> list[int]:
    import psutil
    from helpers import kill_all

    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return []
    kill_all(procs)
    return [p.pid for p in procs]


def _wait_for(patterns: list[str], alive: Any, timeout: float = 360) -> bool:
    probe = os.environ["SRC_PROBE_DIR"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if all(glob.glob(os.path.join(probe, p)) for p in patterns):
            time.sleep(0.5)  # let the markers' writers finish
            return True
        time.sleep(0.2)
    return all(glob.glob(os.path.join(probe, p)) for p in patterns)


def engine(result: dict[str, Any]) -> None:
    import threading

    import psutil
    from helpers import engine_args

    import sglang_roll_compat
    from sglang_roll_compat.roll import patch as sglang_patch

    result["engine_imported_before_access"] = "sglang.srt.entrypoints.engine" in sys.modules
    for hook in HOOKS:
        sglang_roll_compat.add_child_hook(hook)

    def launch() -> None:
        try:
            sglang_patch.engine.engine_module.Engine(**engine_args(log_level="error", dp_size=2))
            result["outcome"] = "launched"
        except BaseException as exc:
            result["outcome"] = type(exc).__name__

    # The proof is in the children's markers; the launch itself fails later (no GPU), and with a
    # DP controller on a CPU it may not return (see the report), so it runs in a daemon thread.
    thread = threading.Thread(target=launch, daemon=True)
    thread.start()
    result["markers_seen"] = _wait_for(["fp8-dp_controller-*.json", "fp8-scheduler-*.json"], thread.is_alive)
    result.setdefault("outcome", "still launching")
    result["killed"] = [p.pid for p in psutil.Process().children(recursive=True)]
    for pid in result["killed"]:
        _kill_tree(pid)


def http(result: dict[str, Any]) -> None:
    from helpers import engine_args
    from roll_http_child import launch_server

    from sglang_roll_compat.server import free_port

    config = engine_args(log_level="error", host="127.0.0.1", port=free_port())
    ctx = multiprocessing.get_context("spawn")
    server = ctx.Process(target=launch_server, args=(config, HOOKS))
    server.start()
    result["markers_seen"] = _wait_for(["fp8-scheduler-*.json"], server.is_alive)
    result["server_alive_at_marker"] = server.is_alive()
    result["killed"] = _kill_tree(server.pid or 0)
    server.join(timeout=10)


def main() -> None:
    scenario, out_path = sys.argv[1], sys.argv[2]
    result: dict[str, Any] = {"scenario": scenario}
    try:
        {"engine": engine, "http": http}[scenario](result)
    except BaseException:
        result["outcome"] = "error"
        result["traceback"] = traceback.format_exc()[-3000:]
    with open(out_path, "w") as fh:
        json.dump(result, fh)
    sys.stdout.flush()
    os._exit(0)  # a launch thread may still wait on a child that is gone


if __name__ == "__main__":
    main()
