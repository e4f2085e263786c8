"""ROLL's env profile: the variables ROLL's own ``_set_envs_and_config`` copies set, and its worker
name, added to the env policy while the profile is armed.

ROLL's per-version copies of SGLang's ``_set_envs_and_config`` set, besides what upstream sets:
``TF_CPP_MIN_LOG_LEVEL=3`` (every release), ``CUTE_DSL_LOG_LEVEL=30`` and
``CUTE_DSL_LOG_TO_CONSOLE=1`` (0.5.4+), ``TORCH_NCCL_AVOID_RECORD_STREAMS=1`` (0.4.x). Here each
goes through the env policy like every other variable: a value the user set wins; where the
installed release's upstream sets it itself (family data: ``EnvFacts.upstream_sets``) upstream's
value stays; otherwise ROLL's value is set; every decision is reported with its reason.

ROLL names its workers through the ``WORKER_NAME`` environment variable (and points FlashInfer at
``~/.cache/$WORKER_NAME``); while armed, the worker slot comes from ``WORKER_NAME`` when no
``worker_name`` is given, so each ROLL worker keeps its own private 0700 directories.

The profile lives in the process-wide shared state (builtins only), so every copy of the package
in the process sees it. It is armed by importing ``sglang_roll_compat.roll.patch`` or by
:func:`arm`; the plain package never arms it.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from packaging.version import Version

from .. import _shared
from ..envpolicy import EnvFacts

logger = logging.getLogger(__name__)

PROFILE = "roll"
WORKER_NAME_ENV = "WORKER_NAME"


@dataclass(frozen=True)
class RollVar:
    name: str
    value: str
    reason: str
    since: tuple[int, ...] | None = None  # ROLL sets it from this release on
    before: tuple[int, ...] | None = None  # ... and only below this one

    def applies(self, release: str) -> bool:
        parts = Version(release).release
        if self.since is not None and parts < self.since:
            return False
        return not (self.before is not None and parts >= self.before)


ROLL_VARS = (
    RollVar("TF_CPP_MIN_LOG_LEVEL", "3", "ROLL: no TensorFlow C++ logging in the engine's processes"),
    RollVar("CUTE_DSL_LOG_LEVEL", "30", "ROLL (0.5.4+): CuTe DSL logs at WARNING", since=(0, 5, 4)),
    RollVar(
        "CUTE_DSL_LOG_TO_CONSOLE",
        "1",
        "ROLL (0.5.4+): CuTe DSL logs to the console, without which CUTE_DSL_LOG_LEVEL has no effect",
        since=(0, 5, 4),
    ),
    RollVar(
        "TORCH_NCCL_AVOID_RECORD_STREAMS",
        "1",
        "ROLL (0.4.x): NCCL collectives do not record streams (memory is freed sooner)",
        before=(0, 5),
    ),
)


def extras(release: str, facts: EnvFacts) -> tuple[tuple[str, str, str, bool], ...]:
    """ROLL's variables for ``release``, as ``(name, value, reason, upstream_sets_it)`` tuples
    (the builtins-only form the shared state keeps; ``envpolicy.ExtraVar(*t)`` reads them)."""
    return tuple(
        (v.name, v.value, v.reason, facts.sets_upstream(v.name, release)) for v in ROLL_VARS if v.applies(release)
    )


def _selected() -> tuple[str, EnvFacts]:
    package = importlib.import_module(__package__.rpartition(".")[0])  # this copy, vendored too
    error = getattr(package, "GATE_ERROR", None)
    if error is not None:
        raise error
    return package.SELECTION.installed.version, package.FAMILY.env


def arm() -> None:
    """Add ROLL's variables and ``WORKER_NAME`` to every later launch in this process (idempotent)."""
    release, facts = _selected()
    profile = {"extras": extras(release, facts), "worker_name_env": WORKER_NAME_ENV}
    shared = _shared.state()
    with shared.lock:
        profiles = shared.__dict__.setdefault("profiles", {})
        if profiles.get(PROFILE) != profile:
            profiles[PROFILE] = profile
            logger.debug("ROLL env profile armed for SGLang %s: %s", release, [e[0] for e in profile["extras"]])


def disarm() -> None:
    shared = _shared.state()
    with shared.lock:
        shared.__dict__.get("profiles", {}).pop(PROFILE, None)


def armed() -> bool:
    shared = _shared.state()
    with shared.lock:
        return PROFILE in shared.__dict__.get("profiles", {})
