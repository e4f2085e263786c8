"""Child hooks used by the launch tests (imported inside SGLang's child processes)."""

from __future__ import annotations

import json
import os


def leave_marker() -> None:
    """Record, from inside the child, its role, pid and the env the policy promised it."""
    from sglang_roll_compat import child_role

    directory = os.environ["SRC_PROBE_DIR"]
    names = (
        "FLASHINFER_WORKSPACE_BASE",
        "TRITON_CACHE_DIR",
        "NCCL_CUMEM_ENABLE",
        "CUDA_DEVICE_MAX_CONNECTIONS",
        "PYTORCH_CUDA_ALLOC_CONF",
        "PYTORCH_ALLOC_CONF",
        "SGLANG_BLOCK_NONZERO_RANK_CHILDREN",
    )
    payload = {
        "role": child_role(),
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "env": {n: os.environ.get(n) for n in names},
    }
    with open(os.path.join(directory, f"hook-{child_role()}-{os.getpid()}.json"), "w") as fh:
        json.dump(payload, fh)


def explode() -> None:
    raise RuntimeError("probe hook exploded on purpose")
