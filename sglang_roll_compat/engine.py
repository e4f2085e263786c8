"""``sglang_roll_compat.Engine``: SGLang's offline Engine behind one API for every release.

The facade logic (validation, adaptation, death-aware calls) lives in :mod:`facade`; this module
is the in-process transport: it launches the real upstream ``Engine`` (patched: see ``launch``)
and hands the release's own ``io_struct`` request objects to its tokenizer manager.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import logging
import weakref
from collections.abc import Awaitable, Iterable
from typing import Any

from . import launch, serverargs
from .capabilities import NATIVE, Capability, _fields, _params, capabilities
from .facade import ENGINE_MODULE, REQUESTS, MemoryMeter, _check_rids
from .facade_rl import RLFacade
from .memmeter import default_meter, nvidia_smi_meter, nvml_meter

logger = logging.getLogger(__name__)

__all__ = ["Capability", "Engine", "capabilities", "default_meter", "nvidia_smi_meter", "nvml_meter"]


class Engine(RLFacade):
    """SGLang's offline Engine, with one API for every supported release.

    ``Engine(**server_args, worker_name=None)``: server arguments pass through to SGLang after a
    check against the installed ``ServerArgs`` (unknown names get a did-you-mean). The engine is
    launched with the shim's patches; see :mod:`facade` for the calling rules.
    """

    def __init__(self, *, worker_name: str | None = None, memory_meter: MemoryMeter | None = None, **server_args: Any):
        serverargs.check(server_args)
        module = importlib.import_module(ENGINE_MODULE)
        with launch.launch_options(worker_name=worker_name):
            upstream = module.Engine(**server_args)
        self._attach(upstream, memory_meter)

    @classmethod
    def from_upstream(cls, upstream: Any, memory_meter: MemoryMeter | None = None) -> Engine:
        """Wrap an already created upstream ``Engine`` (tests; frameworks that build it themselves)."""
        self = cls.__new__(cls)
        self._attach(upstream, memory_meter)
        return self

    def _attach(self, upstream: Any, memory_meter: MemoryMeter | None) -> None:
        self._upstream = upstream
        self._death = launch.context_of(upstream)
        self._setup(memory_meter, getattr(upstream, "loop", None))
        # upstream registers its own shutdown at exit, which kills every child of the process
        atexit.unregister(upstream.shutdown)
        self._finalizer = weakref.finalize(self, _shutdown_at_exit, weakref.ref(self))
        atexit.register(self._finalizer)

    # -- what users may reach through ----------------------------------------------------
    @property
    def tokenizer_manager(self) -> Any:
        return self._upstream.tokenizer_manager

    @property
    def upstream(self) -> Any:
        """The upstream SGLang ``Engine`` object (for what the facade does not cover)."""
        return self._upstream

    @property
    def server_args(self) -> Any:
        return self._upstream.server_args

    # -- the in-process transport --------------------------------------------------------
    async def _request(self, op: str, fields: dict[str, Any] | None) -> Any:
        tm = self.tokenizer_manager
        method = getattr(tm, op)
        if fields is None:  # flush_cache, and pause/continue before they took a request object
            return await method()
        obj = getattr(self._io, REQUESTS[op])(**fields)
        if op in ("pause_generation", "continue_generation"):
            return await method(obj)
        return await method(obj, None)

    def _generate_call(self, kwargs: dict[str, Any]) -> Awaitable[Any]:
        if set(kwargs) <= _params(type(self._upstream).async_generate):
            return self._upstream.async_generate(**kwargs)  # type: ignore[no-any-return]
        return self._generate_request(kwargs)  # a request field upstream's async_generate does not pass on

    async def _generate_request(self, kwargs: dict[str, Any]) -> Any:
        """What upstream's ``async_generate`` does (one non-streaming answer), with every field of
        the release's ``GenerateReqInput`` (``session_params`` before 0.5.15, say)."""
        fields = {k: v for k, v in kwargs.items() if v is not None}
        fields["text"] = fields.pop("prompt", None)
        obj = self._io.GenerateReqInput(**fields)
        return await self.tokenizer_manager.generate_request(obj, None).__anext__()

    def _generate_params(self) -> frozenset[str]:
        request_fields = _fields(self._io.GenerateReqInput) - {"text", "stream"}
        return _params(type(self._upstream).async_generate) | request_fields

    async def _abort(self, rids: list[str] | None) -> list[str]:
        return self._abort_now(rids)

    def _abort_now(self, rids: list[str] | None) -> list[str]:
        """The tokenizer manager's abort is synchronous: no event-loop round trip is needed."""
        tm = self.tokenizer_manager
        if rids is not None:
            for rid in rids:
                tm.abort_request(rid=rid)
            return rids
        pending = list(getattr(tm, "rid_to_state", {}))
        if self._caps["abort"].support == NATIVE:
            tm.abort_request(abort_all=True)
        else:
            for rid in pending:
                tm.abort_request(rid)
        return pending

    def abort(self, rids: Iterable[str] | None = None) -> list[str]:
        """Abort the given requests, or all pending ones (None); returns the rids sent."""
        self._check_open()
        return self._abort_now(_check_rids(rids))

    # -- the in-process transport of facade_rl ------------------------------------------------
    @functools.cached_property
    def _tm_class(self) -> Any:
        return importlib.import_module("sglang.srt.managers.tokenizer_manager").TokenizerManager

    async def _read_weight_version(self) -> str | None:
        tm = self.tokenizer_manager
        if callable(getattr(tm, "config_value", None)):  # 0.5.17+: the published config record
            return tm.config_value("weight_version")  # type: ignore[no-any-return]
        return getattr(tm.server_args, "weight_version", None)

    async def _set_weight_version(self, version: str) -> tuple[bool, str]:
        tm = self.tokenizer_manager
        if hasattr(self._tm_class, "update_weight_version"):  # 0.5.19+: tokenizer manager and schedulers
            await tm.update_weight_version(
                self._io.UpdateWeightVersionReqInput(new_version=version, abort_all_requests=False)
            )
        elif hasattr(self._tm_class, "_update_weight_version_if_provided"):
            tm._update_weight_version_if_provided(version)
        else:  # what this release's HTTP server does (its tokenizer manager has no method for it)
            tm.server_args.weight_version = version
        return True, f"weight version set to {version}"

    def _profile_fields(self) -> frozenset[str]:
        params = _params(self._tm_class.start_profile)
        if "req" in params:  # 0.5.15+: one ProfileReq
            return _fields(self._io.ProfileReq) - {"type", "req_type", "profile_id"}
        return params - {"self"}

    async def _profile(self, start: bool, fields: dict[str, Any]) -> None:
        tm = self.tokenizer_manager
        if not start:
            await tm.stop_profile()
        elif "req" in _params(self._tm_class.start_profile):
            await tm.start_profile(self._io.ProfileReq(**fields))
        else:
            await tm.start_profile(**fields)

    async def _encode(self, fields: dict[str, Any]) -> Any:
        obj = getattr(self._io, REQUESTS["encode"])(**fields)
        return await self.tokenizer_manager.generate_request(obj, None).__anext__()

    async def _score(self, fields: dict[str, Any]) -> Any:
        return await self.tokenizer_manager.score_request(**fields, request=None)

    def _serialize(self, payload: Any) -> Any:
        return self._serializer.serialize(payload)

    @functools.cached_property
    def _serializer(self) -> Any:
        return importlib.import_module(ENGINE_MODULE).MultiprocessingSerializer

    def _server_arg(self, name: str) -> Any:
        return getattr(self.server_args, name, None)

    def _tp_size(self) -> int:
        return int(getattr(self.server_args, "tp_size", 1))

    def _child_pids(self) -> list[int]:
        return self._death.child_pids() if isinstance(self._death, launch.LaunchContext) else []

    def _server_info(self) -> dict[str, Any]:
        info: dict[str, Any] = self._upstream.get_server_info()
        return info

    def _close_transport(self) -> None:
        self._finalizer.detach()
        atexit.unregister(self._finalizer)
        if isinstance(self._death, launch.LaunchContext):
            self._death.close(terminate=True)
        watchdog = getattr(self.tokenizer_manager, "_subprocess_watchdog", None)
        if watchdog is not None:
            try:
                watchdog.stop()
            except Exception:
                logger.debug("upstream SubprocessWatchdog.stop failed", exc_info=True)
        # upstream leaves its zmq sockets open; a zmq context collected later would then block
        # forever in term() (at interpreter exit, say)
        for owner in (self._upstream, self.tokenizer_manager):
            _close_zmq_sockets(owner)


def _close_zmq_sockets(owner: Any) -> None:
    for value in list(vars(owner).values()) if hasattr(owner, "__dict__") else []:
        if type(value).__module__.startswith("zmq") and hasattr(value, "close") and hasattr(value, "linger"):
            try:
                value.close(linger=0)
            except Exception:
                logger.debug("closing %r failed", value, exc_info=True)


def _shutdown_at_exit(ref: weakref.ref[Engine]) -> None:
    engine = ref()
    if engine is not None:
        try:
            engine.shutdown()
        except Exception:
            logger.debug("shutdown at exit failed", exc_info=True)
