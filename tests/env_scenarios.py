"""Call the real, patched ``_set_envs_and_config`` of the installed SGLang and report.

``python env_scenarios.py SCENARIO OUT.json``. Scenarios: ``main``, ``thread`` (a worker thread
inside a running asyncio loop), ``tp2`` (tensor parallel 2: 0.4.6's Triton workaround),
``unpatched_thread`` (control: the shim's patches removed).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import traceback
from typing import Any

USER_ENV = {
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
    "NCCL_NVLS_ENABLE": "0",
    "TRTLLM_ENABLE_PDL": "0",
}
REPORTED = (
    "CUDA_DEVICE_MAX_CONNECTIONS",
    "PYTORCH_CUDA_ALLOC_CONF",
    "NCCL_NVLS_ENABLE",
    "NCCL_CUMEM_ENABLE",
    "TRTLLM_ENABLE_PDL",
    "CUDA_MODULE_LOADING",
    "SGLANG_BLOCK_NONZERO_RANK_CHILDREN",
    "TRITON_CACHE_MANAGER",
    "FLASHINFER_WORKSPACE_BASE",
    "TRITON_CACHE_DIR",
)


def server_args(**overrides: Any) -> Any:
    from helpers import engine_args
    from sglang.srt.server_args import ServerArgs

    return ServerArgs(**engine_args(**overrides))


def call(result: dict[str, Any], **overrides: Any) -> None:
    from sglang.srt.entrypoints import engine

    try:
        engine._set_envs_and_config(server_args(**overrides))
        result["outcome"] = "ok"
    except BaseException as exc:
        result["outcome"] = type(exc).__name__
        result["message"] = str(exc)
        result["traceback"] = traceback.format_exc()[-2000:]
    result["env"] = {name: os.environ.get(name) for name in REPORTED}
    try:  # 0.5.18+: importing sglang setdefaults these caches under $SGLANG_CACHE_DIR in the caller
        from sglang.srt.environ import third_party_cache_defaults

        result["sglang_cache_defaults"] = third_party_cache_defaults()
    except ImportError:
        result["sglang_cache_defaults"] = {}


def main() -> None:
    scenario, out = sys.argv[1], sys.argv[2]
    os.environ.update(USER_ENV)
    import sglang_roll_compat

    result: dict[str, Any] = {"scenario": scenario}
    if scenario == "unpatched_thread":
        sglang_roll_compat.unpatch()
    if scenario in ("thread", "unpatched_thread"):

        async def in_loop() -> None:
            result["loop_running"] = asyncio.get_running_loop().is_running()
            call(result)

        worker = threading.Thread(target=lambda: asyncio.run(in_loop()))
        worker.start()
        worker.join()
    elif scenario == "tp2":
        call(result, tp_size=2)
    else:
        call(result)
    result["status"] = {s.name: [s.state, s.reached] for s in sglang_roll_compat.status()}
    with open(out, "w") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main()
