"""verl's and slime's launch patterns with a real SGLang on this CPU machine (the scheduler child
fails: no GPU, after our child hook recorded its role and environment).
``python framework_scenarios.py SCENARIO[,SCENARIO...] OUT.json``.

* ``verl``: ``_launch_subprocesses(server_args=..., init_tokenizer_manager_func=...,
  run_scheduler_process_func=..., run_detokenizer_process_func=...)`` called directly (the
  module function up to 0.5.9, the classmethod from 0.5.10; the keyword arguments only where the
  release takes them, as verl does from 0.5.7), from an asyncio loop on a worker thread (verl's
  server is a Ray async actor).
* ``slime``: SGLang's ``launch_server`` in a spawned ``multiprocessing.Process`` with both
  ``PYTORCH_CUDA_ALLOC_CONF`` and ``PYTORCH_ALLOC_CONF`` set in the parent; the process target is
  a module-level function that imports our package first (a spawned child imports only what
  unpickling its target needs). The scheduler's *initial* environment is read from ``/proc``
  too: what SGLang's scheduler code would see without our child entry (the control).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import multiprocessing
import os
import random
import sys
import threading
import time
import traceback
from typing import Any

ALLOC = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "PYTORCH_ALLOC_CONF": "expandable_segments:True"}
VERL_KWARGS = ("init_tokenizer_manager_func", "run_scheduler_process_func", "run_detokenizer_process_func")
VERL_KWARGS_SINCE = "0.5.7"  # verl's own branch; the releases before take server_args only


def _children(exclude: set[int] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    import psutil

    tracker = getattr(getattr(multiprocessing, "resource_tracker", None), "_resource_tracker", None)
    skip = set(exclude) | {getattr(tracker, "_pid", None)}
    out = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in skip:
            continue
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" in cmd:
            continue
        out.append({"pid": child.pid, "cmd": cmd[:200]})
    return out


def _server_args() -> Any:
    from helpers import engine_args
    from sglang.srt.server_args import ServerArgs

    return ServerArgs(**engine_args(log_level="error", port=random.randint(31000, 39000)))


def verl(result: dict[str, Any]) -> None:
    import importlib.metadata

    from packaging.version import Version

    import sglang_roll_compat

    sglang_roll_compat.add_child_hook("childhook_probe:leave_marker")
    from sglang.srt.entrypoints import engine as engine_mod

    launch = vars(engine_mod).get("_launch_subprocesses") or engine_mod.Engine._launch_subprocesses
    accepted = inspect.signature(launch).parameters
    kwargs = {name: getattr(engine_mod, name[: -len("_func")]) for name in VERL_KWARGS if name in accepted}
    result["launch_kwargs"] = sorted(kwargs)
    since = Version(importlib.metadata.version("sglang")) >= Version(VERL_KWARGS_SINCE)
    result["expected_kwargs"] = sorted(VERL_KWARGS) if since else []

    async def server_actor() -> None:
        result["loop_running"] = asyncio.get_running_loop().is_running()
        result["thread"] = threading.current_thread().name
        try:
            launch(server_args=_server_args(), **kwargs)
            result["exception"] = None
        except BaseException as exc:
            result["exception"] = type(exc).__name__
            result["message"] = str(exc)
            result["traceback"] = traceback.format_exc()[-3000:]

    worker = threading.Thread(target=lambda: asyncio.run(server_actor()), name="verl-server-actor")
    worker.start()
    worker.join()
    time.sleep(0.5)
    result["children_left"] = _children()


def slime_server(server_args: Any) -> None:
    """What slime's process target becomes: our package first, then SGLang's launch_server."""
    import sglang_roll_compat

    sglang_roll_compat.add_child_hook("childhook_probe:leave_marker")
    from sglang.srt.entrypoints.http_server import launch_server

    launch_server(server_args)


def _watch_scheduler_environ(server: Any, result: dict[str, Any]) -> None:
    """Poll the server's children and keep the first one's initial environment (``/proc``)."""
    import psutil

    names = tuple(ALLOC)
    while server.is_alive() and not result.get("scheduler_environ"):
        try:
            for child in psutil.Process(server.pid).children():
                cmd = " ".join(child.cmdline())
                if "resource_tracker" in cmd:
                    continue
                environ = child.environ()
                result["scheduler_environ"] = {n: environ.get(n) for n in names}
                break
        except psutil.Error:
            pass
        time.sleep(0.02)


def slime(result: dict[str, Any]) -> None:
    os.environ.update(ALLOC)
    import sglang_roll_compat  # noqa: F401 - the trainer imports it; the server child does too

    server_args = _server_args()
    result["parent_env"] = {n: os.environ.get(n) for n in ALLOC}
    multiprocessing.set_start_method("spawn", force=True)
    server = multiprocessing.Process(target=slime_server, args=(server_args,))
    server.start()
    _watch_scheduler_environ(server, result)
    server.join(timeout=180)
    result["server_exitcode"] = server.exitcode
    if server.exitcode is None:
        server.kill()
        server.join()
    for name in ALLOC:
        os.environ.pop(name, None)
    time.sleep(0.5)
    result["children_left"] = _children()


def main() -> None:
    """``SCENARIOS`` is a comma-separated list, run in order in this one process (each spawn
    pays SGLang's import again: one parent for all of them keeps the suite fast)."""
    scenarios, out_path = sys.argv[1].split(","), sys.argv[2]
    results: dict[str, Any] = {}

    def write() -> None:
        with open(out_path, "w") as fh:
            json.dump(results, fh)

    for scenario in scenarios:
        result: dict[str, Any] = {"scenario": scenario, "pid": os.getpid()}
        results[scenario] = result
        write()  # if a launch kills us, the file says how far we got
        if scenario == "verl":
            verl(result)
        elif scenario == "slime":
            slime(result)
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
        result["survived"] = True
        write()


if __name__ == "__main__":
    main()
