"""SGLang's ``mp`` module global, seen through a proxy that hooks the processes it starts.

Every SGLang release creates its children in ``engine.py`` (and the DP controller's schedulers in
``data_parallel_controller.py``) as ``mp.Process(target=..., ...)`` and its ready-pipes as
``mp.Pipe(...)``, with ``mp`` the module global bound to ``multiprocessing``. Where the target
comes from changes from release to release (module globals, a def-time default, an argument taken
from a class attribute, a classmethod launch); the ``mp.Process`` call does not. So instead of
chasing the target we replace that module global with a proxy (``wrapt.ObjectProxy`` of
``multiprocessing``) whose ``Process`` is a subclass that, while a launch context is active on
the calling thread, swaps the target for ``partial(child_entry, role, spec, target)`` and records
the process; ``Pipe`` records the pipe pair so the watchdog can unblock a launch whose child died
before it reported ready. Everything else passes through to ``multiprocessing`` untouched.
"""

from __future__ import annotations

import functools
import importlib
import multiprocessing
import sys
from typing import TYPE_CHECKING, Any

import wrapt

if TYPE_CHECKING:  # wrapt < 2 has no runtime subscription of ObjectProxy
    _ObjectProxy = wrapt.ObjectProxy[Any]
else:
    _ObjectProxy = wrapt.ObjectProxy

from . import _shared, childhooks, launch

_ROLE_BY_NAME = {
    "run_scheduler_process": "scheduler",
    "run_scheduler_process_with_init_pipe": "scheduler",
    "run_data_parallel_controller_process": "dp_controller",
    "run_detokenizer_process": "detokenizer",
    "run_multi_detokenizer_router_process": "detokenizer_router",
}


def role_of(target: Any, scheduler_targets: tuple[str, ...] = ()) -> str:
    func = target
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__name__", type(func).__name__)
    qualified = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', name)}"
    if qualified in scheduler_targets:
        return "scheduler"
    return _ROLE_BY_NAME.get(name, f"other:{name}")


def _active_source() -> Any:
    """The launch context of this thread (parent) or the child spec (inside a DP controller)."""
    ctx = launch.current()
    if ctx is not None:
        return ctx
    return childhooks.current_child_spec()


class TrackedProcess(multiprocessing.Process):
    """``multiprocessing.Process`` whose target runs behind :func:`childhooks.child_entry`."""

    def __init__(
        self,
        group: None = None,
        target: Any = None,
        name: str | None = None,
        args: Any = (),
        kwargs: Any = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        source = _active_source()
        ctx = None
        if source is not None and target is not None:
            if isinstance(source, childhooks.ChildSpec):
                spec = source
            else:
                ctx, spec = source, source.child_spec()
            role = role_of(target, spec.scheduler_targets)
            if role == "dp_controller":
                target = functools.partial(dp_controller_entry, target)
            target = functools.partial(childhooks.child_entry, role, spec, target)
            _shared.count_reached("child_processes")
        super().__init__(group, target, name, args, kwargs or {}, daemon=daemon)
        if ctx is not None:
            ctx.track_process(self)


class MultiprocessingProxy(_ObjectProxy):
    """Stands in for ``multiprocessing`` as a module global of SGLang's launch modules."""

    Process = TrackedProcess

    def Pipe(self, duplex: bool = True) -> Any:  # noqa: N802 - the multiprocessing name
        pair = self.__wrapped__.Pipe(duplex)
        ctx = launch.current()
        if ctx is not None:
            ctx.track_pipe(pair)
        return pair


def make_proxy(original: Any) -> MultiprocessingProxy:
    if original is not multiprocessing:
        raise TypeError(f"expected the multiprocessing module, found {original!r}")
    return MultiprocessingProxy(original)


DP_CONTROLLER_MODULE = "sglang.srt.managers.data_parallel_controller"


def dp_controller_entry(target: Any, *args: Any, **kwargs: Any) -> Any:
    """Inside a DP-controller child (behind ``child_entry``): hook the schedulers it starts,
    then run SGLang's controller."""
    install_in_child(DP_CONTROLLER_MODULE)
    return target(*args, **kwargs)


def install_in_child(module_name: str) -> None:
    """Inside a DP-controller child: hook the schedulers it starts (no restore: our process)."""
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    if getattr(module, "mp", None) is multiprocessing:
        setattr(module, "mp", MultiprocessingProxy(multiprocessing))  # noqa: B010 - unknown module type
