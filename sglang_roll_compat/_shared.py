"""Process-wide state shared by every copy of this package in one interpreter.

A framework may vendor the package (``myrl/_vendor/sglang_roll_compat``) while another
dependency imports the top-level copy. Both copies must see one set of patches, one child-hook
list and one launch registry, so that state lives in a plain module object registered under a
fixed name in ``sys.modules``; it holds only builtins (dicts, lists, a lock), never classes of
either copy, so copies of different releases can still read it.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

SHARED_MODULE = "_sglang_roll_compat_shared_v1"

# Attribute set on every object this package installs in place of an upstream one. Names that
# start with ``_self_`` are stored on a wrapt proxy itself rather than forwarded to the wrapped
# object, so the same name works for proxies and plain objects. Its value is a dict:
# {"owner": <package name of the copy that applied it>, "patch": <patch name>}.
MARKER = "_self_sglang_roll_compat_marker"


def state() -> Any:
    """The shared state module, created on first use (atomic under the GIL)."""
    module = sys.modules.get(SHARED_MODULE)
    if module is None:
        module = sys.modules.setdefault(SHARED_MODULE, types.ModuleType(SHARED_MODULE))
    ns = module.__dict__
    if "lock" not in ns:  # "lock" is set last: its presence means the rest is there
        ns.setdefault("records", {})  # target key -> record dict (see patching.py)
        ns.setdefault("reached", {})  # patch name -> number of calls that went through it
        ns.setdefault("child_hooks", [])  # "pkg.module:function" strings, in order
        ns.setdefault("armed", {})  # patch target -> owner that armed it (present while wanted)
        ns.setdefault("launches", {"active": 0, "start_method": None, "saved": False})
        ns.setdefault("side_effects", {})  # name -> dict describing an upstream side effect
        ns.setdefault("lock", threading.RLock())
    return module


def marker_of(obj: object) -> dict[str, str] | None:
    try:
        value = getattr(obj, MARKER, None)
    except Exception:  # a hostile proxy
        return None
    return value if isinstance(value, dict) else None


def count_reached(name: str) -> None:
    shared = state()
    with shared.lock:
        shared.reached[name] = shared.reached.get(name, 0) + 1
