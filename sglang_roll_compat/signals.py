"""Signal handling around SGLang's launch.

Up to 0.5.9, ``_set_envs_and_config`` calls ``signal.signal`` unguarded; off the main thread
(a Ray async actor, a worker thread) that raises ``ValueError: signal only works in main
thread``. We replace the engine module's ``signal`` global with a proxy whose ``signal()``
skips the call off the main thread (debug log) and passes everything else through.

On the main thread upstream's handlers are installed for real, and the launch wrapper puts the
caller's own SIGQUIT/SIGCHLD handlers back right after: the SIGQUIT handler kill-trees the
caller (the trainer) when a child fails, and the SIGCHLD handler of 0.4.6 reaps *any* child of
the caller. Their purpose, noticing a failed child, is kept by the watchdog and by the children
themselves, which report instead of signalling (see ``childhooks``).
"""

from __future__ import annotations

import logging
import signal as _signal
import threading
from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:  # wrapt < 2 has no runtime subscription of ObjectProxy
    _ObjectProxy = wrapt.ObjectProxy[Any]
else:
    _ObjectProxy = wrapt.ObjectProxy

from . import _shared

logger = logging.getLogger(__name__)

_WATCHED = tuple(s for s in (getattr(_signal, "SIGQUIT", None), getattr(_signal, "SIGCHLD", None)) if s is not None)


def on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class SignalModuleProxy(_ObjectProxy):
    """Stands in for the ``signal`` module inside SGLang's engine module."""

    def signal(self, signalnum: int, handler: Any) -> Any:
        if on_main_thread():
            return self.__wrapped__.signal(signalnum, handler)
        _shared.count_reached("signal_off_main_thread")
        logger.debug(
            "skipped SGLang's signal.signal(%s, %r) off the main thread (it would raise ValueError); "
            "the shim's watchdog covers its purpose",
            signalnum,
            handler,
        )
        return self.__wrapped__.getsignal(signalnum)


def make_proxy(original: Any) -> SignalModuleProxy:
    if original is not _signal:
        raise TypeError(f"expected the signal module, found {original!r}")
    return SignalModuleProxy(original)


def capture() -> dict[int, Any]:
    """The current Python-level handlers of SIGQUIT and SIGCHLD (readable from any thread)."""
    return {s: _signal.getsignal(s) for s in _WATCHED}


def restore(saved: dict[int, Any]) -> list[str]:
    """Put ``saved`` handlers back (main thread only); returns the names of those restored."""
    if not on_main_thread():
        return []
    restored = []
    for signum, handler in saved.items():
        if handler is None:  # installed from C, unknown to Python: leave it
            continue
        if _signal.getsignal(signum) is not handler:
            _signal.signal(signum, handler)
            restored.append(_signal.Signals(signum).name)
    return restored
