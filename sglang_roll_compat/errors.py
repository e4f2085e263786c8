"""The exception tree: callers choose strict or lenient handling by catching a base class."""

from __future__ import annotations

from collections.abc import Sequence


class SGLangRollCompatError(Exception):
    """Base class of every error this package raises on purpose."""


class SGLangNotInstalledError(SGLangRollCompatError, ImportError):
    """SGLang is not importable in this environment."""


class UnsupportedVersionError(SGLangRollCompatError, NotImplementedError):
    """The installed SGLang release has not been tested with this package.

    ``found`` is the installed version string (as read from the package metadata),
    ``supported`` the tested releases in ascending order.
    """

    def __init__(self, found: str, supported: Sequence[str], hint: str = "") -> None:
        self.found = found
        self.supported = tuple(supported)
        self.hint = hint
        super().__init__(self._message())

    def _message(self) -> str:
        newest = self.supported[-1] if self.supported else "<none>"
        lines = [
            f"sglang_roll_compat has not been tested with the installed SGLang {self.found!r}.",
            f"Supported SGLang versions: {', '.join(self.supported)}.",
            f"Fix: pip install 'sglang=={newest}'   (or any supported version above).",
        ]
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class BrokenInstallError(SGLangRollCompatError, ImportError):
    """The SGLang install contradicts itself (e.g. metadata and ``sglang.__version__`` differ)."""


class PatchTargetError(SGLangRollCompatError, AttributeError):
    """A patch target that the selected family expects does not exist in the installed SGLang."""


class ChildHookError(SGLangRollCompatError, RuntimeError):
    """A hook registered with ``add_child_hook`` could not be imported or raised in a child."""


class _ChildFailureError(SGLangRollCompatError, RuntimeError):
    def __init__(self, message: str, reports: Sequence[dict[str, object]] = ()) -> None:
        super().__init__(message)
        # what the failing children reported: role, pid, time (epoch seconds), error text
        self.reports = [dict(r) for r in reports]


class EngineLaunchError(_ChildFailureError):
    """SGLang's Engine failed to start; the message carries the failing child's own error."""


class EngineDeadError(_ChildFailureError):
    """A child process of a running Engine died; pending and later calls fail with this."""


class EngineClosedError(SGLangRollCompatError, RuntimeError):
    """A method was called on an Engine after ``shutdown()``."""


class MemoryReleaseTimeoutError(SGLangRollCompatError, TimeoutError):
    """``release_memory_occupation`` returned but the memory did not become free in time."""


class PlanError(SGLangRollCompatError, ValueError):
    """A ROLL strategy config cannot be laid out as engines (bad mapping, sizes, values)."""


class ServerArgsError(SGLangRollCompatError, ValueError):
    """Server arguments that the installed SGLang would reject or ignore."""
