"""How much GPU memory a set of processes holds: what ``release_memory_occupation`` checks.

The facade's release returns only once the engine's processes really hold less memory (a
trainer that allocates right after a release that has not landed yet runs out of memory). The
default meter asks NVML in-process through ``pynvml`` (``nvidia-ml-py``, a dependency of SGLang
0.5.x on CUDA): about a hundred microseconds a reading. Where ``pynvml`` cannot be imported or
NVML does not start, ``nvidia-smi`` is asked instead (a subprocess: tens of milliseconds a
reading). Without either, the meter answers None and the release is not checked (a CPU).

A meter is any ``Callable[[Sequence[int]], int | None]``: bytes held by those pids, or None.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_nvml: Any = None  # the pynvml module once NVML started
_nvml_failed = False  # NVML could not start here: not tried again


def nvidia_smi_meter(pids: Sequence[int]) -> int | None:
    """GPU memory (bytes) held by ``pids`` according to nvidia-smi; None when it is unavailable."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    wanted = set(pids)
    total = 0
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) in wanted and parts[1].isdigit():
            total += int(parts[1]) * 1024 * 1024
    return total


def _started_nvml() -> Any:
    """pynvml with NVML initialised (once per process), or None."""
    global _nvml, _nvml_failed
    with _lock:
        if _nvml is not None or _nvml_failed:
            return _nvml
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # ImportError, or NVMLError: no driver here
            _nvml_failed = True
            logger.debug("NVML unavailable (%s): nvidia-smi measures GPU memory instead", exc)
            return None
        _nvml = pynvml
        return _nvml


def nvml_meter(pids: Sequence[int]) -> int | None:
    """GPU memory (bytes) held by ``pids`` on every GPU, from NVML; None when NVML is unavailable
    (or a reading fails: the caller then knows nothing, rather than something wrong)."""
    nvml = _started_nvml()
    if nvml is None:
        return None
    wanted = set(pids)
    total = 0
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = getattr(proc, "usedGpuMemory", None)
                if proc.pid in wanted and isinstance(used, int):
                    total += used
    except Exception as exc:  # NVMLError
        logger.debug("NVML reading failed: %s", exc)
        return None
    return total


def default_meter(pids: Sequence[int]) -> int | None:
    """NVML when it works here, else nvidia-smi (see the module docstring)."""
    value = nvml_meter(pids)
    return value if value is not None else nvidia_smi_meter(pids)
