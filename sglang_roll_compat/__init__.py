"""sglang_roll_compat: run SGLang's offline Engine safely inside RL training frameworks.

``import sglang_roll_compat`` finds the installed SGLang release from its package metadata
(without importing SGLang), refuses releases it has not been tested with
(:class:`UnsupportedVersionError`, a ``NotImplementedError``), selects that release's patch
family and arms its patches, which land when SGLang's engine module is imported (before or after
this package). See README.md for the supported versions and what each patch does.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

import wrapt as _wrapt

from . import sideeffects as _sideeffects
from . import versions as _versions
from ._version import __version__
from .childhooks import add_child_hook, child_hooks, child_role, remove_child_hook
from .envpolicy import trainer_env
from .errors import (
    BrokenInstallError,
    ChildHookError,
    EngineClosedError,
    EngineDeadError,
    EngineLaunchError,
    MemoryReleaseTimeoutError,
    PatchTargetError,
    PlanError,
    ServerArgsError,
    SGLangNotInstalledError,
    SGLangRollCompatError,
    UnsupportedVersionError,
)
from .family import ENGINE as _ENGINE_MODULE
from .family import Family
from .patching import Patcher, PatchStatus

if TYPE_CHECKING:
    from .engine import Engine
    from .preflight_checks import preflight
    from .roll.planner import plan_from_config
    from .server import ServerEngine

__all__ = [
    "FAMILY",
    "SELECTION",
    "BrokenInstallError",
    "ChildHookError",
    "Engine",
    "EngineClosedError",
    "EngineDeadError",
    "EngineLaunchError",
    "MemoryReleaseTimeoutError",
    "PatchStatus",
    "PatchTargetError",
    "PlanError",
    "SGLangNotInstalledError",
    "SGLangRollCompatError",
    "ServerArgsError",
    "ServerEngine",
    "UnsupportedVersionError",
    "__version__",
    "add_child_hook",
    "child_hooks",
    "child_role",
    "patch",
    "plan_from_config",
    "preflight",
    "remove_child_hook",
    "status",
    "supported_versions",
    "trainer_env",
    "unpatch",
]


def _running_as_cli() -> bool:
    """True while ``python -m <this package>`` imports us: the doctor must run (and report)
    even when the version gate refuses the installed SGLang."""
    if sys.argv[:1] != ["-m"]:
        return False
    argv = list(getattr(sys, "orig_argv", []))
    for i, arg in enumerate(argv):
        target = argv[i + 1] if arg == "-m" and i + 1 < len(argv) else arg[2:] if arg.startswith("-m") else ""
        if target:
            return target in (__name__, f"{__name__}.__main__")
    return False


GATE_ERROR: BaseException | None = None
try:
    SELECTION: _versions.Selection = _versions.select()
except (UnsupportedVersionError, SGLangNotInstalledError, BrokenInstallError) as _exc:
    if not _running_as_cli():
        raise
    GATE_ERROR = _exc  # the doctor reports it and exits 2 (unsupported) or 1 (error)
else:
    FAMILY: Family = importlib.import_module(f".{SELECTION.family}", __name__).FAMILY
    _PATCHER = Patcher(owner=__name__, patches=FAMILY.patches)


def supported_versions() -> tuple[str, ...]:
    """Every SGLang release this package is tested with, oldest first."""
    return _versions.supported_versions()


def _patcher() -> Patcher:
    if GATE_ERROR is not None:
        raise GATE_ERROR
    return _PATCHER


def patch() -> None:
    """Arm and apply the patches of the selected family (idempotent, thread-safe).

    Called by ``import sglang_roll_compat``; call it again after :func:`unpatch`.
    """
    _patcher().patch()


def unpatch() -> None:
    """Restore SGLang's original objects, for every copy of this package in the process."""
    _patcher().unpatch()


def status() -> list[PatchStatus]:
    """Per patch: target, state (applied / pending import / not needed / off…), calls reached."""
    return _patcher().status()


_LAZY = {
    "Engine": ".engine",
    "ServerEngine": ".server",
    "preflight": ".preflight_checks",
    "plan_from_config": ".roll.planner",
}


def __getattr__(name: str) -> Any:  # lazy: these modules are only imported when used
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if GATE_ERROR is None:
    _sideeffects.remember_originals()
    _wrapt.register_post_import_hook(_sideeffects.on_engine_import, _ENGINE_MODULE)
    patch()
