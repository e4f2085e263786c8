"""One daemon thread that watches the children of every engine launched through the shim.

It replaces what upstream does with SIGQUIT (a child that fails signals its parent, which then
kill-trees itself, the trainer included): every ``interval`` seconds it asks each watched launch
context whether a child reported an error or exited, and fails that context, which unblocks a
launch still waiting for its children and fails pending calls of a running engine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from .errors import EngineDeadError

logger = logging.getLogger(__name__)

INTERVAL = 0.2  # seconds between checks: a failure surfaces well within the 5 s we promise


class Watched(Protocol):
    def check(self) -> str | None: ...

    def fail(self, message: str) -> None: ...


class DeathNotice:
    """Whom to tell when an engine dies: each listener gets one EngineDeadError; one added after
    the death gets it at once. The facade registers a listener per pending call."""

    def __init__(self) -> None:
        self.error: str | None = None
        self._lock = threading.Lock()
        self._listeners: list[Callable[[EngineDeadError], None]] = []

    def reports(self) -> list[dict[str, Any]]:
        return []

    def add_listener(self, callback: Callable[[EngineDeadError], None]) -> None:
        with self._lock:
            error = self.error
            if error is None:
                self._listeners.append(callback)
        if error is not None:
            callback(EngineDeadError(error, self.reports()))

    def remove_listener(self, callback: Callable[[EngineDeadError], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def _notify(self, listeners: list[Callable[[EngineDeadError], None]], message: str) -> None:
        reports = self.reports()
        for callback in listeners:
            try:
                callback(EngineDeadError(message, reports))
            except Exception:
                logger.exception("engine-death listener failed")


class Watchdog:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._watched: list[Any] = []
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, ctx: Watched) -> None:
        with self._lock:
            if ctx not in self._watched:
                self._watched.append(ctx)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sglang-roll-compat-watchdog", daemon=True)
                self._thread.start()
        self._wake.set()

    def unwatch(self, ctx: Watched) -> None:
        with self._lock:
            if ctx in self._watched:
                self._watched.remove(ctx)

    def watching(self) -> int:
        with self._lock:
            return len(self._watched)

    def check_now(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            with self._lock:
                watched = list(self._watched)
                if not watched:
                    self._thread = None
                    return
            for ctx in watched:
                try:
                    message = ctx.check()
                except Exception:  # never let one bad context stop the watchdog
                    logger.exception("watchdog check failed for %r", ctx)
                    continue
                if message:
                    self.unwatch(ctx)
                    logger.error("%s", message)
                    ctx.fail(message)


WATCHDOG = Watchdog()
