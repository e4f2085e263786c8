"""Drop-in for ROLL's ``roll.third_party.sglang.patch``.

``from sglang_roll_compat.roll import patch as sglang_patch`` replaces ROLL's
``from roll.third_party.sglang import patch as sglang_patch``; nothing else in ROLL's strategy
changes. Importing it:

* runs this package's version gate (an untested SGLang raises
  :class:`~sglang_roll_compat.UnsupportedVersionError`, as ``import sglang_roll_compat`` does —
  ROLL's own gate raised a bare ``NotImplementedError``) and arms the launch patches;
* arms the ROLL env profile (``sglang_roll_compat.roll.env``);
* does **not** import SGLang's engine module: ``sglang_patch.engine.engine_module`` imports it
  on first *access* (attribute access or ``from ...engine import engine_module``), and the
  patches land on it through their post-import hooks.
"""

from __future__ import annotations

from ... import GATE_ERROR as _GATE_ERROR  # importing the package ran the version gate
from .. import env as _env

if _GATE_ERROR is not None:  # only under ``python -m sglang_roll_compat``, which defers it
    raise _GATE_ERROR

from . import engine

_env.arm()

__all__ = ["engine"]
