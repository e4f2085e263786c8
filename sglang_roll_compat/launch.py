"""The wrappers on SGLang's launch path (shared by every family) and the launch context.

A :class:`LaunchContext` lives on the launching thread from ``Engine.__init__`` (or the launch
function, for callers such as the HTTP server that skip ``Engine``) until the engine is shut
down. It carries the environment the user had before launch, the env-policy result, the
processes and ready-pipes SGLang created (recorded by ``mpproxy``), and the private state
directory where children leave their "reached" markers and error reports.

Wrappers (each calls the upstream function and returns its result untouched):

* ``Engine.__init__``: opens the context, so the env snapshot predates ``ServerArgs``.
* the launch function (module ``_launch_subprocesses`` up to 0.5.9, classmethod from 0.5.10):
  opens the context if ``Engine.__init__`` did not, saves and later restores the caller's
  multiprocessing start method, and turns a child's failure into :class:`EngineLaunchError`
  carrying the child's own error, after ending every process the launch started.
* ``_set_envs_and_config``: lets upstream run, puts the caller's SIGQUIT/SIGCHLD handlers back
  (main thread), then applies the env policy.
* ``Engine.shutdown``: closes the context after upstream's shutdown.
"""

from __future__ import annotations

import glob
import inspect
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

from . import _shared, childhooks, envpolicy, signals, workspace
from .errors import EngineDeadError, EngineLaunchError
from .watchdog import WATCHDOG, DeathNotice

logger = logging.getLogger(__name__)

CTX_ATTR = "_sglang_roll_compat_launch"
REPORT_GRACE = 2.0  # seconds to wait for a child's report once the launch failed

_local = threading.local()
_death_hooks: list[Callable[[str], None]] = []


def add_death_hook(callback: Callable[[str], None]) -> None:
    """Call ``callback(message)`` whenever any engine of this process loses a child (after the
    engine's own listeners). The server-mode entry point uses it to end the server process."""
    if callback not in _death_hooks:
        _death_hooks.append(callback)


def current() -> LaunchContext | None:
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else None


def _push(ctx: LaunchContext) -> None:
    if not hasattr(_local, "stack"):
        _local.stack = []
    _local.stack.append(ctx)


def _pop(ctx: LaunchContext) -> None:
    stack = getattr(_local, "stack", [])
    if stack and stack[-1] is ctx:
        stack.pop()


class launch_options:  # noqa: N801 - used as a context manager, reads like a function
    """Per-thread options for the next launch (the facade passes the worker name this way)."""

    def __init__(self, worker_name: str | None = None) -> None:
        self.worker_name = worker_name

    def __enter__(self) -> launch_options:
        self._previous = getattr(_local, "options", None)
        _local.options = self
        return self

    def __exit__(self, *exc: object) -> None:
        _local.options = self._previous


def _pending_worker_name() -> str | None:
    options = getattr(_local, "options", None)
    return options.worker_name if options is not None else None


def context_of(engine: Any) -> LaunchContext | None:
    return vars(engine).get(CTX_ATTR) if hasattr(engine, "__dict__") else None


class LaunchContext(DeathNotice):
    """State of one engine launch, from ``Engine.__init__`` to shutdown."""

    def __init__(self, env_before: Mapping[str, str], worker_name: str | None) -> None:
        super().__init__()
        self.id = secrets.token_hex(6)
        self.owner_pid = os.getpid()
        self.thread_name = threading.current_thread().name
        self.env_before = dict(env_before)
        self.worker_name = worker_name
        self.worker: envpolicy.Worker | None = None
        self.env_changes: list[envpolicy.EnvChange] = []
        self.hooks = childhooks.child_hooks()
        self.scheduler_targets: tuple[str, ...] = ()
        self.processes: list[multiprocessing.Process] = []
        self.pipes: list[tuple[Any, Any]] = []
        self.phase = "launching"  # launching | running | failed | closed
        self.started = time.monotonic()
        self._spec: childhooks.ChildSpec | None = None
        self._pids_cache: list[int] | None = None
        # tasks waiting on this engine's tokenizer manager: a death interrupts them (raw upstream
        # Engine calls included; the facade converts the interruption into EngineDeadError)
        self.waiting: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        root = workspace.cache_root()
        self.state_dir = str(
            workspace.ensure_private_dir(root, ["run", f"{workspace.host_component()}-{self.owner_pid}-{self.id}"])
        )

    def __repr__(self) -> str:
        return f"<LaunchContext {self.id} {self.phase} pid={self.owner_pid} children={len(self.processes)}>"

    # -- filled in along the launch ---------------------------------------------------
    def set_env(self, changes: list[envpolicy.EnvChange], worker: envpolicy.Worker) -> None:
        self.env_changes = list(changes)
        self.worker = worker
        self._spec = None

    def child_spec(self) -> childhooks.ChildSpec:
        if self._spec is None:
            self._spec = childhooks.ChildSpec(
                launch_id=self.id,
                owner_pid=self.owner_pid,
                state_dir=self.state_dir,
                env=envpolicy.child_environment(self.env_changes),
                hooks=self.hooks,
                scheduler_targets=self.scheduler_targets,
            )
        return self._spec

    def track_process(self, process: multiprocessing.Process) -> None:
        with self._lock:
            self.processes.append(process)

    def track_pipe(self, pair: tuple[Any, Any]) -> None:
        with self._lock:
            self.pipes.append(pair)

    # -- what the children left -------------------------------------------------------
    def reports(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(glob.glob(os.path.join(self.state_dir, "report-*.json"))):
            try:
                with open(path, encoding="utf-8") as fh:
                    out.append(json.load(fh))
            except (OSError, ValueError):
                continue
        return sorted(out, key=lambda r: r.get("time", 0))

    def reached(self) -> dict[str, list[int]]:
        """Child role -> pids whose ``child_entry`` ran (from their markers)."""
        out: dict[str, list[int]] = {}
        for path in glob.glob(os.path.join(self.state_dir, "reached-*")):
            role, _, pid = os.path.basename(path)[len("reached-") :].rpartition("-")
            if pid.isdigit():
                out.setdefault(role, []).append(int(pid))
        return out

    def child_pids(self) -> list[int]:
        """Our direct children and every hooked descendant (from their markers); fixed once the
        engine runs, so it is read from disk only until then."""
        if self._pids_cache is not None:
            return self._pids_cache
        pids = {p.pid for p in self.processes if p.pid is not None}
        for found in self.reached().values():
            pids.update(found)
        result = sorted(pids)
        if self.phase == "running":
            self._pids_cache = result
        return result

    # -- watchdog protocol ------------------------------------------------------------
    def check(self) -> str | None:
        if self.phase not in ("launching", "running"):
            return None
        reports = self.reports()
        if reports:
            return self._describe(reports)
        for process in list(self.processes):
            code = process.exitcode
            if code is not None:
                return self._describe([], f"SGLang child pid {process.pid} ({process.name}) exited with code {code}")
        for role, pids in self.reached().items():
            for pid in pids:
                if not _pid_alive(pid):
                    return self._describe([], f"SGLang {role} pid {pid} is gone")
        return None

    def _describe(self, reports: list[dict[str, Any]], fallback: str = "") -> str:
        when = "during launch" if self.phase == "launching" else "while the engine was running"
        if not reports:
            return f"{fallback} {when} (no error report: killed or crashed hard)."
        first = reports[0]
        head = f"SGLang {first.get('role')} (pid {first.get('pid')}) failed {when}:"
        return f"{head}\n{first.get('error', '').rstrip()}"

    def fail(self, message: str) -> None:
        with self._lock:
            if self.error is not None or self.phase == "closed":
                return
            self.error = message
            was = self.phase
            self.phase = "failed"
            listeners = list(self._listeners)
            pipes = list(self.pipes)
        if was == "launching":
            # Up to 0.5.9 the parent blocks in a plain recv() on each ready-pipe while it still
            # holds the writer end itself, so a dead child never unblocks it: answer for the child.
            for _, writer in pipes:
                try:
                    writer.send({"status": "failed (sglang_roll_compat)", "error": message})
                except Exception:  # already closed by upstream, or full
                    pass
        self._notify(listeners, message)
        self._interrupt_waiting(message)
        for hook in list(_death_hooks):
            try:
                hook(message)
            except Exception:
                logger.exception("engine-death hook failed")

    def _interrupt_waiting(self, message: str) -> None:
        """Cancel every task still waiting on this engine, through its own loop, with the death
        message: no answer will ever come (the shim has taken away upstream's SIGQUIT)."""
        for task in list(self.waiting):
            if task.done():
                continue
            try:
                task.get_loop().call_soon_threadsafe(task.cancel, f"sglang_roll_compat: the engine died: {message}")
            except RuntimeError:  # its loop is closed: nothing waits there any more
                pass

    # -- ending -------------------------------------------------------------------------
    def terminate(self, timeout: float = 10.0) -> list[int]:
        """End every process this launch started, and their descendants; returns their pids.

        Our direct children are ended through their ``multiprocessing.Process`` objects (so their
        exit codes stay readable and nothing else reaps them); grandchildren through psutil.
        """
        import psutil

        direct = {p.pid: p for p in self.processes if p.pid is not None}
        others: dict[int, Any] = {}
        for pid in self.child_pids():
            try:
                proc = psutil.Process(pid)
                descendants = proc.children(recursive=True)
            except psutil.Error:
                continue
            if pid not in direct:
                others[pid] = proc
            for child in descendants:
                if child.pid not in direct:
                    others[child.pid] = child
        for process in direct.values():
            if process.exitcode is None:
                process.terminate()
        for proc in others.values():
            try:
                proc.terminate()
            except psutil.Error:
                pass
        deadline = time.monotonic() + min(timeout, 5.0)
        for process in direct.values():
            process.join(timeout=max(deadline - time.monotonic(), 0.0))
        _, alive = psutil.wait_procs(list(others.values()), timeout=max(deadline - time.monotonic(), 0.0))
        for process in direct.values():
            if process.exitcode is None:
                process.kill()
                process.join(timeout=timeout)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=timeout)
        return sorted(set(direct) | set(others))

    def close(self, terminate: bool = True) -> None:
        WATCHDOG.unwatch(self)
        if terminate:
            self.terminate()
        with self._lock:
            self.phase = "closed"
            self._listeners.clear()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


# -- multiprocessing start method (process-global, shared by concurrent launches) ------------
def _start_method_acquire() -> None:
    shared = _shared.state()
    with shared.lock:
        launches = shared.launches
        if launches["active"] == 0:
            launches["start_method"] = multiprocessing.get_start_method(allow_none=True)
        launches["active"] += 1


def _start_method_release() -> None:
    shared = _shared.state()
    with shared.lock:
        launches = shared.launches
        launches["active"] -= 1
        if launches["active"] == 0:
            saved = launches["start_method"]
            if multiprocessing.get_start_method(allow_none=True) != saved:
                multiprocessing.set_start_method(saved, force=True)
                logger.debug("restored the multiprocessing start method to %r", saved)


# -- the wrappers --------------------------------------------------------------------------
def engine_init(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _shared.count_reached("engine_init")
    ctx = LaunchContext(os.environ, _pending_worker_name())
    _push(ctx)
    WATCHDOG.watch(ctx)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException:
        ctx.close()
        raise
    finally:
        _pop(ctx)
    if instance is not None and hasattr(instance, "__dict__"):
        vars(instance)[CTX_ATTR] = ctx
        tm = getattr(instance, "tokenizer_manager", None)
        if tm is not None and hasattr(tm, "__dict__"):
            vars(tm)[CTX_ATTR] = ctx
    with ctx._lock:
        if ctx.phase == "launching":
            ctx.phase = "running"
    return result


def _note_scheduler_func(ctx: LaunchContext, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    try:
        bound = inspect.signature(wrapped).bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return
    func = bound.arguments.get("run_scheduler_process_func")
    if func is not None:
        name = getattr(func, "__qualname__", getattr(func, "__name__", ""))
        ctx.scheduler_targets = (*ctx.scheduler_targets, f"{getattr(func, '__module__', '?')}.{name}")


def launch_subprocesses(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _shared.count_reached("launch_subprocesses")
    ctx = current()
    own = ctx is None
    if ctx is None:
        ctx = LaunchContext(os.environ, _pending_worker_name())
        _push(ctx)
        WATCHDOG.watch(ctx)
    _note_scheduler_func(ctx, wrapped, args, kwargs)
    _start_method_acquire()
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        message = _failure_message(ctx)
        reports = ctx.reports()
        ctx.close()
        if message:
            raise EngineLaunchError(message, reports) from exc
        raise
    finally:
        _start_method_release()
        if own:
            _pop(ctx)
    if own:
        with ctx._lock:
            if ctx.phase == "launching":
                ctx.phase = "running"
    return result


def _failure_message(ctx: LaunchContext) -> str | None:
    """The children's own account of a failed launch (waits briefly for a report to land)."""
    deadline = time.monotonic() + REPORT_GRACE
    while True:
        message = ctx.error or ctx.check()
        if message or time.monotonic() > deadline or not ctx.processes:
            return message
        time.sleep(0.05)


def profile_env(env_before: Mapping[str, str]) -> tuple[list[envpolicy.ExtraVar], str | None]:
    """The extra variables and the worker name (from an environment variable such as ROLL's
    ``WORKER_NAME``) of the framework profiles armed in this process (``shared.profiles``:
    builtins only, so every copy of the package reads them; see ``sglang_roll_compat.roll``)."""
    shared = _shared.state()
    with shared.lock:
        profiles = [dict(p) for p in shared.__dict__.get("profiles", {}).values()]
    extras: list[envpolicy.ExtraVar] = []
    name = None
    for profile in profiles:
        extras.extend(envpolicy.ExtraVar(*entry) for entry in profile.get("extras", ()))
        var = profile.get("worker_name_env")
        if name is None and var and env_before.get(var):
            name = env_before[var]
    return extras, name


def set_envs_and_config(facts: envpolicy.EnvFacts) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        _shared.count_reached("set_envs_and_config")
        ctx = current()
        env_before = ctx.env_before if ctx is not None else dict(os.environ)
        saved = signals.capture()
        result = wrapped(*args, **kwargs)
        restored = signals.restore(saved)
        if restored:
            logger.debug("restored the caller's %s handler(s) after SGLang's", ", ".join(restored))
        server_args = args[0] if args else kwargs.get("server_args")
        name = ctx.worker_name if ctx is not None else _pending_worker_name()
        extras, name_from_env = profile_env(env_before)
        if name is None:
            name = name_from_env
        if ctx is not None and ctx.worker_name is None:
            ctx.worker_name = name
        worker = envpolicy.worker_from_args(server_args, name, os.environ, facts)
        changes = envpolicy.plan(server_args, os.environ, worker, user_env=env_before, facts=facts, extras=extras)
        ours = {
            c.name
            for c in changes
            if c.action != "keep" and c.name in ("FLASHINFER_WORKSPACE_BASE", "TRITON_CACHE_DIR")
        }
        if ours:
            workspace.create_worker_dirs(worker.slot)
        envpolicy.apply_to_process(changes, os.environ)
        if ctx is not None:
            ctx.set_env(changes, worker)
        return result

    return wrapper


def engine_shutdown(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _shared.count_reached("engine_shutdown")
    ctx = context_of(instance) if instance is not None else None
    if ctx is not None:
        WATCHDOG.unwatch(ctx)  # the children are about to end on purpose: not a failure
    try:
        return wrapped(*args, **kwargs)
    finally:
        if ctx is not None:
            ctx.close(terminate=False)


def skip_upstream_subprocess_watchdog(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Upstream's SubprocessWatchdog (0.5.10+) SIGQUITs its own process when a child dies, which
    kills an off-main-thread caller outright; ours reports instead, so theirs is not started."""
    _shared.count_reached("subprocess_watchdog")
    if current() is not None:
        logger.debug("not starting SGLang's SubprocessWatchdog: sglang_roll_compat's watchdog covers it")
        return None
    return wrapped(*args, **kwargs)


class _SpawnEnvGuard:
    """Holds the process-wide spawn lock from before upstream's ``configure_subprocess`` reads
    ``os.environ`` until after it has put it back (see :func:`serialize_subprocess_env`)."""

    def __init__(self, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._lock = spawn_env_lock()
        self._wrapped, self._args, self._kwargs = wrapped, args, kwargs
        self._cm: Any = None

    def __enter__(self) -> Any:
        self._lock.acquire()
        try:
            self._cm = self._wrapped(*self._args, **self._kwargs)
            return self._cm.__enter__()
        except BaseException:
            self._lock.release()
            raise

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._cm.__exit__(*exc)
        finally:
            self._lock.release()


def spawn_env_lock() -> Any:
    """One re-entrant lock per process, shared by every copy of the package."""
    shared = _shared.state()
    lock = shared.__dict__.get("spawn_env_lock")
    if lock is None:
        lock = shared.__dict__.setdefault("spawn_env_lock", threading.RLock())
    return lock


def serialize_subprocess_env(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """SGLang starts each scheduler inside ``memory_saver_adapter.configure_subprocess()``, which
    prepends torch_memory_saver's hook to ``os.environ["LD_PRELOAD"]`` and restores the old value
    afterwards. Two engines launched from two threads interleave those edits: a child inherits
    the hook twice (torch_memory_saver then refuses to start: "invalid LD_PRELOAD") and the
    caller can be left with the hook in its own environment. The returned context manager makes
    the edit, the child's start and the restore one critical section per process."""
    _shared.count_reached("subprocess_env_lock")
    return _SpawnEnvGuard(wrapped, args, kwargs)


def tokenizer_handlers(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Wraps ``TokenizerManager.auto_create_handle_loop``, which every request path of upstream
    calls first: the waiting task is noted (a scheduler death then interrupts it, see
    :func:`request_started`), and the caller's signal handlers are kept
    (:func:`signals.keep_callers_handlers`)."""
    # called through the class with an object that is no TokenizerManager, wrapt passes it first
    tm = instance if instance is not None else (args[0] if args else None)
    request_started(tm)
    return signals.keep_callers_handlers(tm, lambda: wrapped(*args, **kwargs))


def request_started(tokenizer_manager: Any) -> None:
    """A request enters the tokenizer manager of an engine launched under the shim (every upstream
    request path calls ``auto_create_handle_loop`` first): remember the task that waits for it."""
    ctx = vars(tokenizer_manager).get(CTX_ATTR) if hasattr(tokenizer_manager, "__dict__") else None
    if ctx is None:
        return
    import asyncio  # loaded by then (a request runs on a loop); not at package import

    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: nothing to interrupt
        return
    if task is not None:
        ctx.waiting.add(task)
    if ctx.error is not None:  # after joining: a death from now on finds the task in ``waiting``
        if task is not None:
            ctx.waiting.discard(task)
        raise EngineDeadError(ctx.error, ctx.reports())
