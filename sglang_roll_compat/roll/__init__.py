"""What is ROLL-specific: the drop-in for ROLL's ``roll/third_party/sglang`` folder.

* ``sglang_roll_compat.roll.patch`` — ROLL's ``from roll.third_party.sglang import patch as
  sglang_patch`` becomes ``from sglang_roll_compat.roll import patch as sglang_patch``;
  ``sglang_patch.engine.engine_module`` is SGLang's own ``sglang.srt.entrypoints.engine`` with
  this package's patches armed. Importing it arms the ROLL env profile (:mod:`.env`).
* :func:`launch_server` (``.http``) — ROLL's HTTP mode: SGLang's ``launch_server`` run in ROLL's
  server child with the same patches, env and child hooks.
* :mod:`.planner` — ROLL's ``actor_infer`` config → one server-args dict per engine
  (``sglang_roll_compat.plan_from_config`` and ``python -m sglang_roll_compat plan``).

Importing this subpackage itself changes nothing: only ``.patch`` (or :func:`arm`) arms the
profile, so the planner can be used without changing any launch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .env import arm, armed, disarm

if TYPE_CHECKING:
    from .http import launch_server

__all__ = ["arm", "armed", "disarm", "launch_server"]


def __getattr__(name: str) -> Any:  # lazy: the HTTP entry imports SGLang's server when called
    if name == "launch_server":
        from .http import launch_server

        return launch_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
