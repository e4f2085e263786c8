"""Code that runs inside SGLang's child processes (scheduler, DP controller, detokenizer).

SGLang starts its children with ``spawn``, which pickles each process target by module and
name: a wrapt proxy cannot travel, and wrapping the upstream function in its own module breaks
the pickling of the original. So the parent hands ``multiprocessing`` a
``functools.partial(child_entry, role, spec, original)``: a plain function of ours, a picklable
:class:`ChildSpec` and the untouched upstream function (pickled by reference). In the child,
``child_entry``:

1. applies the engine's environment (the env policy's values win over whatever another engine,
   launched concurrently from another thread of the parent, left in the parent's ``os.environ``);
2. stops the child from sending SIGQUIT to the engine's owner process (upstream's way to make
   the owner kill-tree itself, the trainer included) and writes an error report instead, which
   the owner's watchdog turns into an exception;
3. leaves a "reached" marker per role, arms :mod:`weightprobe` in schedulers (the engine side
   of ``verify_weights``), runs the hooks registered with :func:`add_child_hook` (scheduler and
   DP-controller roles);
4. exits if the process that started it is already gone (SGLang's own parent-death signal is
   set only once its entry point runs), else calls the target it was given (for a DP
   controller, ``mpproxy`` hands over the original wrapped so that the schedulers it starts are
   hooked too: this module depends on no other module of the launch path).

This module imports nothing heavy: a child imports it while unpickling its target.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import _shared, weightprobe
from .errors import ChildHookError

logger = logging.getLogger(__name__)

HOOK_ROLES = frozenset({"scheduler", "dp_controller"})
_HOOK_SPEC_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")

_current_role: str | None = None
_current_spec: ChildSpec | None = None


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs from its engine's launch; pickled into every child."""

    launch_id: str
    owner_pid: int
    state_dir: str
    env: tuple[tuple[str, str | None], ...] = ()  # None: remove the variable
    hooks: tuple[str, ...] = ()
    scheduler_targets: tuple[str, ...] = field(default=())  # qualified names seen as schedulers


# -- the public hook registry (lives in the parent) -----------------------------------------
def _check_hook_spec(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(f"child hook {spec!r}: expected 'package.module:function'")
    module, func = spec.split(":")
    for part in (module, func):
        if not part or not set(part) <= _HOOK_SPEC_CHARS or part.startswith(".") or ".." in part:
            raise ValueError(f"child hook {spec!r}: expected 'package.module:function'")
    return module, func


def add_child_hook(spec: str) -> None:
    """Run ``package.module:function`` (no arguments) in every scheduler and DP-controller child
    of every Engine launched after this call, before SGLang's own entry point.

    Hooks are registered by import path because they run in another process; a hook that fails
    to import or raises makes the launch fail with an error naming the hook. Registering the
    same hook twice keeps one entry. Inside a hook, :func:`child_role` says where it runs.
    """
    _check_hook_spec(spec)
    shared = _shared.state()
    with shared.lock:
        if spec not in shared.child_hooks:
            shared.child_hooks.append(spec)


def remove_child_hook(spec: str) -> None:
    shared = _shared.state()
    with shared.lock:
        if spec in shared.child_hooks:
            shared.child_hooks.remove(spec)


def child_hooks() -> tuple[str, ...]:
    shared = _shared.state()
    with shared.lock:
        return tuple(shared.child_hooks)


def child_role() -> str | None:
    """``"scheduler"``, ``"dp_controller"``, ``"detokenizer"``… inside an SGLang child, else None."""
    return _current_role


# -- the child side -------------------------------------------------------------------------
class _RecentErrors(logging.Handler):
    """Keeps the last ERROR records of the child: upstream logs its traceback before signalling."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.lines: deque[str] = deque(maxlen=20)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a bad format string must not break the child's logging
            pass


_recent_errors = _RecentErrors()
_failure_reported = threading.Event()


def _write_json_atomically(path: str, payload: dict[str, Any]) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(payload, fh)
    os.replace(tmp, path)


def report_failure(spec: ChildSpec, role: str, error: str) -> None:
    """Leave an error report where the owner's watchdog looks for it."""
    _failure_reported.set()
    path = os.path.join(spec.state_dir, f"report-{role}-{os.getpid()}.json")
    try:
        _write_json_atomically(path, {"role": role, "pid": os.getpid(), "time": time.time(), "error": error})
    except OSError as exc:  # the owner is gone or the directory was removed
        print(f"sglang_roll_compat: cannot write child report {path}: {exc}", file=sys.stderr)


def _describe_current_error() -> str:
    exc = sys.exc_info()[1]
    if exc is not None:
        return "".join(traceback.format_exception(exc)).rstrip()
    if _recent_errors.lines:
        return "\n".join(_recent_errors.lines)
    return "the child signalled a failure without an error message"


def _intercept_sigquit(spec: ChildSpec, role: str) -> None:
    """In this child, a SIGQUIT to the engine's owner becomes a report; other signals pass."""
    import psutil
    import wrapt

    def send_signal(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        sig = args[0] if args else kwargs.get("sig")
        if sig == signal.SIGQUIT and instance is not None:
            report_failure(spec, role, _describe_current_error())
            if instance.pid == spec.owner_pid:
                logger.error(
                    "SGLang %s (pid %d) failed; reported to the engine owner instead of sending "
                    "it SIGQUIT (which would kill the owner's whole process tree).",
                    role,
                    os.getpid(),
                )
                return None
        return wrapped(*args, **kwargs)

    def kill(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        pid, sig = [*args, None, None][:2]
        if sig == signal.SIGQUIT and pid == spec.owner_pid:
            report_failure(spec, role, _describe_current_error())
            return None
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(psutil.Process, "send_signal", send_signal)
    wrapt.wrap_function_wrapper(os, "kill", kill)


def _mark_reached(spec: ChildSpec, role: str) -> None:
    path = os.path.join(spec.state_dir, f"reached-{role}-{os.getpid()}")
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        logger.warning("cannot leave the reached marker %s: %s", path, exc)


def _load_hook(spec: str) -> Callable[[], Any]:
    module_name, func_name = _check_hook_spec(spec)
    module = importlib.import_module(module_name)
    func = getattr(module, func_name)
    if not callable(func):
        raise TypeError(f"{spec} is not callable")
    return func  # type: ignore[no-any-return]


def run_hooks(spec: ChildSpec, role: str) -> None:
    for hook in spec.hooks:
        try:
            _load_hook(hook)()
        except BaseException as exc:
            detail = "".join(traceback.format_exception(exc)).rstrip()
            message = f"child hook {hook!r} failed in the SGLang {role} (pid {os.getpid()}):\n{detail}"
            report_failure(spec, role, message)
            raise ChildHookError(message) from exc


def _exit_if_orphaned(role: str) -> None:
    """End this child, before SGLang's entry point runs, if the process that started it is gone.

    SGLang's children tie their life to their parent's (``PR_SET_PDEATHSIG``) in their entry
    point's first line, which a child reaches only after it has unpickled its target and imported
    SGLang: seconds after the spawn. A parent killed in between (a Ray actor killed while its
    engine launches, ROLL stopping an HTTP server that is still starting) leaves a child no
    signal reaches, which then holds its memory (and GPU) with no owner. Checked just before the
    entry point, this leaves a window of a few instructions instead of the whole import."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None or parent.is_alive():
        return
    logger.error(
        "SGLang %s (pid %d): the process that started it (pid %s) is gone; exiting before SGLang's "
        "entry point runs (it would be left running with no owner).",
        role,
        os.getpid(),
        parent.pid,
    )
    logging.shutdown()
    os._exit(1)


def current_child_spec() -> ChildSpec | None:
    return _current_spec


def child_entry(role: str, spec: ChildSpec, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The process target we give ``multiprocessing`` in place of SGLang's (runs in the child)."""
    global _current_role, _current_spec
    _current_role, _current_spec = role, spec
    for name, value in spec.env:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    logging.getLogger().addHandler(_recent_errors)
    _intercept_sigquit(spec, role)
    _mark_reached(spec, role)
    if role == "scheduler":
        weightprobe.arm()  # verify_weights: the scheduler answers fingerprint requests
    if role in HOOK_ROLES:
        run_hooks(spec, role)
    _exit_if_orphaned(role)
    try:
        result = target(*args, **kwargs)
    except BaseException:
        report_failure(spec, role, _describe_current_error())
        raise
    if _failure_reported.is_set():
        # Upstream swallowed its exception after "signalling" us; make sure this child ends
        # (threads it left behind would keep it alive) so the owner sees it exit.
        logging.shutdown()
        os._exit(1)
    return result
