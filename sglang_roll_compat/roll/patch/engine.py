"""``sglang_patch.engine.engine_module``: SGLang's own ``sglang.srt.entrypoints.engine`` module.

ROLL's ``patch.engine`` imported it eagerly and swapped some of its globals; here the module is
upstream's, imported on first access of ``engine_module`` (PEP 562 module ``__getattr__``), with
this package's patches applied by their post-import hooks. ``engine_module.Engine`` is SGLang's
own class (not the facade), so ROLL keeps driving its ``tokenizer_manager`` directly.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from ...family import ENGINE

__all__ = ["engine_module"]  # noqa: F822 - provided by __getattr__ below (on access)


def __getattr__(name: str) -> Any:
    if name == "engine_module":
        module: ModuleType = importlib.import_module(ENGINE)
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
