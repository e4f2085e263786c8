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
from collections.abc import Callable
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


# The tokenizer manager installs SIGTERM/SIGQUIT handlers on its event loop at its first request
# (main thread only); in a trainer's process they are the trainer's to own. The server-mode entry
# point turns this off: there the server process is SGLang's own.
contain_tokenizer_handlers = True
_TOKENIZER_SIGNALS = tuple(s for s in (getattr(_signal, "SIGTERM", None), getattr(_signal, "SIGQUIT", None)) if s)


def keep_callers_handlers(tm: Any, call: Callable[[], Any]) -> Any:
    """Run ``call`` (upstream's ``TokenizerManager.auto_create_handle_loop``); on the main
    thread, the caller's SIGTERM/SIGQUIT handlers come back after it (and the loop forgets its
    own), so a SIGTERM to the trainer is the trainer's, and no SIGQUIT kill-trees it. The launch
    wrapper (``launch.tokenizer_handlers``) calls this; this module depends on nothing of it."""
    if not contain_tokenizer_handlers or not on_main_thread():
        return call()
    _shared.count_reached("tokenizer_signal_handlers")
    saved = {sig: _signal.getsignal(sig) for sig in _TOKENIZER_SIGNALS}
    result = call()
    loop = getattr(tm, "event_loop", None)
    if loop is None:
        import asyncio

        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            loop = None
    for sig, handler in saved.items():
        if _signal.getsignal(sig) is handler:
            continue
        if loop is not None:
            try:
                loop.remove_signal_handler(sig)
            except Exception:  # not the loop's, or a loop without signal support
                pass
        _signal.signal(sig, handler if handler is not None else _signal.SIG_DFL)
        logger.debug("restored the caller's %s handler after SGLang's tokenizer manager", _signal.Signals(sig).name)
    return result


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
