"""Process-global side effects of *importing* SGLang's engine module, and what we do about them.

Up to 0.5.13 ``engine.py`` runs ``setattr(threading, "_register_atexit", lambda *a, **k: None)``
at import, which silently stops ``concurrent.futures`` from joining its worker threads at
interpreter exit, process-wide (a trainer's checkpoint writer may be cut off). We remember
Python's own function when this package is imported and put it back right after the engine
module is imported. If SGLang's engine was imported before us, the original is gone and we say
so instead of guessing. Every release also sets a uvloop event-loop policy at import; that one
is reported only (undoing it would change how SGLang's own loops run).
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any

from . import _shared

logger = logging.getLogger(__name__)

REGISTER_ATEXIT = "threading._register_atexit"
LOOP_POLICY = "asyncio event loop policy"


def remember_originals() -> None:
    shared = _shared.state()
    func = getattr(threading, "_register_atexit", None)
    with shared.lock:
        if func is not None and getattr(func, "__module__", None) == "threading":
            shared.side_effects.setdefault("_register_atexit_original", func)


def on_engine_import(module: ModuleType) -> None:
    shared = _shared.state()
    with shared.lock:
        original = shared.side_effects.get("_register_atexit_original")
        current = getattr(threading, "_register_atexit", None)
        if current is None:
            state = "absent in this Python"
        elif current is original or getattr(current, "__module__", None) == "threading":
            state = "untouched"
        elif original is None:
            state = (
                "replaced by SGLang with a no-op and NOT restored: the engine module was imported "
                "before sglang_roll_compat, so Python's function is unknown"
            )
        else:
            threading._register_atexit = original  # type: ignore[attr-defined]
            state = "replaced by SGLang with a no-op; restored (ThreadPoolExecutor joins at exit again)"
            logger.info("restored threading._register_atexit after SGLang's engine import")
        shared.side_effects[REGISTER_ATEXIT] = state
        policy = type(_policy()).__module__
        shared.side_effects[LOOP_POLICY] = (
            "uvloop (set by SGLang's engine import; left in place)" if "uvloop" in policy else f"{policy} (untouched)"
        )


def _policy() -> Any:
    import asyncio  # only once SGLang's engine module is imported (which imports it anyway)

    try:
        return asyncio.get_event_loop_policy()
    except Exception:  # pragma: no cover - Python without policies
        return None


def report() -> dict[str, str]:
    shared = _shared.state()
    with shared.lock:
        return {k: v for k, v in shared.side_effects.items() if not k.startswith("_")}
