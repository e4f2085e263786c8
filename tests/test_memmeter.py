"""The GPU memory meters behind release_memory_occupation's check (sglang_roll_compat.memmeter):
NVML through pynvml (a stand-in module here: no GPU on this machine), nvidia-smi otherwise."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from sglang_roll_compat import memmeter


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(memmeter, "_nvml", None)
    monkeypatch.setattr(memmeter, "_nvml_failed", False)
    return monkeypatch


def fake_pynvml(per_gpu: list[list[tuple[int, Any]]], fail_init: bool = False) -> types.ModuleType:
    mod = types.ModuleType("pynvml")
    mod.inits = 0  # type: ignore[attr-defined]

    def init() -> None:
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")
        mod.inits += 1  # type: ignore[attr-defined]

    mod.nvmlInit = init  # type: ignore[attr-defined]
    mod.nvmlDeviceGetCount = lambda: len(per_gpu)  # type: ignore[attr-defined]
    mod.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    mod.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in per_gpu[h]
    ]
    return mod


def test_nvml_sums_the_given_pids_on_every_gpu_and_starts_nvml_once(fresh: pytest.MonkeyPatch) -> None:
    mod = fake_pynvml([[(10, 1 << 30), (11, 5), (99, 7)], [(10, 3), (12, None)]])
    fresh.setitem(sys.modules, "pynvml", mod)
    assert memmeter.nvml_meter([10, 11, 12]) == (1 << 30) + 5 + 3  # None (no access) counts nothing
    assert memmeter.default_meter([99]) == 7
    assert memmeter.nvml_meter([]) == 0
    assert mod.inits == 1  # type: ignore[attr-defined]


def test_without_nvml_the_default_meter_asks_nvidia_smi(fresh: pytest.MonkeyPatch) -> None:
    fresh.setitem(sys.modules, "pynvml", fake_pynvml([], fail_init=True))
    asked: list[list[int]] = []
    fresh.setattr(memmeter, "nvidia_smi_meter", lambda pids: asked.append(list(pids)) or 42)
    assert memmeter.nvml_meter([1]) is None
    assert memmeter.default_meter([1, 2]) == 42
    assert asked == [[1, 2]]


def test_a_failed_nvml_reading_is_none_not_zero(fresh: pytest.MonkeyPatch) -> None:
    mod = fake_pynvml([[(1, 5)]])

    def broken(handle: Any) -> Any:
        raise RuntimeError("NVML_ERROR_GPU_IS_LOST")

    mod.nvmlDeviceGetComputeRunningProcesses = broken  # type: ignore[attr-defined]
    fresh.setitem(sys.modules, "pynvml", mod)
    assert memmeter.nvml_meter([1]) is None
    fresh.setattr(memmeter, "nvidia_smi_meter", lambda pids: None)
    assert memmeter.default_meter([1]) is None  # nothing known: the release is not checked


def test_nvidia_smi_meter_without_the_tool_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memmeter.shutil, "which", lambda name: None)
    assert memmeter.nvidia_smi_meter([1]) is None
