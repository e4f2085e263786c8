"""The patch engine: patches declared as data, applied through post-import hooks, reversible.

Each family lists :class:`Patch` records. :class:`Patcher` walks that one list both ways:
``patch()`` wraps (``wrapt.FunctionWrapper``) or replaces each target once its module is
imported, before or after us; ``unpatch()`` puts back the exact original objects, but only where
our object is still in place (restoring from ``__wrapped__`` could strip someone else's wrapper).
Every installed object carries a marker, and the records live in process-wide shared state, so a
second (vendored) copy of this package sees the patches and does not stack its own on top.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import wrapt

from . import _shared
from .errors import PatchTargetError

logger = logging.getLogger(__name__)

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Patch:
    """One patch point.

    ``attribute`` may be dotted inside the module (``"Engine._launch_subprocesses"``).
    Exactly one of ``wrapper`` (a wrapt wrapper ``(wrapped, instance, args, kwargs)``) and
    ``factory`` (``original -> replacement``, for module globals such as ``signal``) is given.
    ``not_needed`` (a reason) marks a point where this family's SGLang already does the safe
    thing: it is reported, never applied. ``optional`` targets may be missing (reported "absent").
    """

    name: str
    module: str
    attribute: str
    reason: str
    wrapper: Wrapper | None = None
    factory: Callable[[Any], Any] | None = None
    not_needed: str = ""
    optional: bool = False

    def __post_init__(self) -> None:
        if not self.not_needed and (self.wrapper is None) == (self.factory is None):
            raise ValueError(f"patch {self.name}: give exactly one of wrapper= and factory=")

    @property
    def target(self) -> str:
        return f"{self.module}:{self.attribute}"


@dataclass(frozen=True)
class PatchStatus:
    name: str
    target: str
    state: str  # applied | pending import | not needed | absent | off | overwritten
    reached: int
    owner: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "state": self.state,
            "reached": self.reached,
            "owner": self.owner,
            "reason": self.reason,
        }


def _resolve_parent(module: ModuleType, dotted: str) -> tuple[Any, str]:
    *path, attr = dotted.split(".")
    parent: Any = module
    for part in path:
        parent = vars(parent).get(part) if isinstance(parent, (ModuleType, type)) else None
        if parent is None:
            raise PatchTargetError(f"{module.__name__}:{dotted}: {part!r} does not exist")
    return parent, attr


def _is_initializing(module: ModuleType) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class Patcher:
    """Applies one family's patches on behalf of one copy (``owner``) of this package."""

    def __init__(self, owner: str, patches: Sequence[Patch]) -> None:
        names = [p.name for p in patches]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate patch names in {names}")
        self.owner = owner
        self.patches = tuple(patches)
        self._hooked_modules: set[str] = set()

    # -- public API -------------------------------------------------------------------
    @property
    def armed(self) -> bool:
        """True while the patches are wanted (by this copy or another one with the same targets)."""
        targets = self._targets()
        return bool(targets) and targets <= _shared.state().armed.keys()

    def _targets(self) -> set[str]:
        return {p.target for p in self.patches if not p.not_needed}

    def patch(self) -> None:
        """Arm and apply every needed patch; idempotent and thread-safe."""
        shared = _shared.state()
        to_import: list[str] = []
        with shared.lock:
            for target in self._targets():
                shared.armed[target] = self.owner
            for module_name in self._module_names():
                module = sys.modules.get(module_name)
                if module is None:
                    if module_name not in self._hooked_modules:
                        self._hooked_modules.add(module_name)
                        wrapt.register_post_import_hook(self._on_import, module_name)
                elif _is_initializing(module):
                    to_import.append(module_name)  # another thread is importing it right now
                else:
                    self._apply_module(module)
        for module_name in to_import:  # wait (outside our lock) for that import to finish
            self._on_import(importlib.import_module(module_name))

    def unpatch(self) -> None:
        """Disarm these targets and restore their original objects, where ours are still in place.

        Targets are shared by every copy of the package, so this unpatches them for all copies:
        the process is either patched or not, never half of each.
        """
        shared = _shared.state()
        targets = self._targets()
        with shared.lock:
            for target in targets:
                shared.armed.pop(target, None)
            for key, record in list(shared.records.items()):
                if key not in targets:
                    continue
                parent, attr = record["parent"], record["attr"]
                if vars(parent).get(attr) is record["replacement"]:
                    setattr(parent, attr, record["original"])
                else:
                    logger.warning(
                        "%s was replaced by someone else after we patched it; leaving their "
                        "object in place (our wrapper inside it is disabled).",
                        key,
                    )
                del shared.records[key]

    def status(self) -> list[PatchStatus]:
        shared = _shared.state()
        out = []
        with shared.lock:
            armed = self.armed
            for p in self.patches:
                reached = shared.reached.get(p.name, 0)
                record = shared.records.get(p.target)
                owner = record["owner"] if record else ""
                if p.not_needed:
                    state, reason = "not needed", p.not_needed
                elif record is not None:
                    state, reason = "applied", p.reason
                    if vars(record["parent"]).get(record["attr"]) is not record["replacement"]:
                        state = "overwritten"
                elif not armed:
                    state, reason = "off", p.reason
                elif p.module not in sys.modules:
                    state, reason = "pending import", f"applies when {p.module} is imported"
                else:
                    state, reason = "absent", f"{p.target} does not exist in this SGLang"
                out.append(PatchStatus(p.name, p.target, state, reached, owner, reason))
        return out

    # -- internals ----------------------------------------------------------------------
    def _module_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for p in self.patches:
            if not p.not_needed:
                seen.setdefault(p.module, None)
        return list(seen)

    def _on_import(self, module: ModuleType) -> None:
        shared = _shared.state()
        with shared.lock:
            if self.armed:
                self._apply_module(module)

    @staticmethod
    def _enabled_for(target: str) -> Callable[[], bool]:
        # wrapt's per-wrapper kill switch: a reference someone kept to our wrapper stops
        # doing anything once the target is unpatched.
        def enabled() -> bool:
            return target in _shared.state().armed

        return enabled

    def _apply_module(self, module: ModuleType) -> None:
        shared = _shared.state()
        applied: list[str] = []
        try:
            for p in self.patches:
                if p.not_needed or p.module != module.__name__ or p.target in shared.records:
                    continue
                if self._apply_one(p, module):
                    applied.append(p.target)
        except BaseException:
            for key in applied:  # nothing half-applied
                record = shared.records.pop(key)
                setattr(record["parent"], record["attr"], record["original"])
            raise

    def _apply_one(self, p: Patch, module: ModuleType) -> bool:
        try:
            parent, attr = _resolve_parent(module, p.attribute)
        except PatchTargetError:
            if p.optional:
                return False
            raise
        if attr not in vars(parent):
            if p.optional:
                return False
            raise PatchTargetError(
                f"{p.target} does not exist in the installed SGLang; the patch "
                f"{p.name!r} of this family cannot be applied ({p.reason})."
            )
        original = vars(parent)[attr]
        mark = _shared.marker_of(original)
        if mark is not None:
            # Installed by a copy whose record is gone (it was reloaded); leave it alone.
            logger.debug("%s already carries a patch of %s", p.target, mark.get("owner"))
            return False
        replacement: Any
        if p.wrapper is not None:
            replacement = wrapt.FunctionWrapper(original, p.wrapper, enabled=self._enabled_for(p.target))
        else:
            assert p.factory is not None
            replacement = p.factory(original)
        setattr(replacement, _shared.MARKER, {"owner": self.owner, "patch": p.name})
        setattr(parent, attr, replacement)
        _shared.state().records[p.target] = {
            "parent": parent,
            "attr": attr,
            "original": original,
            "replacement": replacement,
            "owner": self.owner,
            "patch": p.name,
        }
        logger.debug("patched %s (%s)", p.target, p.name)
        return True
