"""The facade logic shared by the in-process ``Engine`` and the HTTP ``ServerEngine``.

Every public method exists once, here, as a coroutine (``async_<name>``) that validates its
input, adapts to what the installed release can do (``capabilities()``), and hands a request to
the transport: the in-process engine sends the release's own ``io_struct`` objects to its
tokenizer manager; the server engine posts the same fields as JSON to the release's HTTP
endpoints. The plain ``<name>`` runs the coroutine on the engine's event loop (or, when that loop
runs in another thread, submits it there). Every call races the engine's death: when the
watchdog sees a child die, pending and later calls raise :class:`EngineDeadError`.

One engine is driven from one event loop: the sync methods use the engine's loop; the async
methods must be awaited on the loop the engine was created in (as upstream requires).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from . import memmeter, weightbuckets
from .capabilities import (
    IO_STRUCT,
    NATIVE,
    UNSUPPORTED,
    _fields,
    _flattened_bucket,
    _memory_tags,
    capabilities,
)
from .errors import EngineClosedError, EngineDeadError, MemoryReleaseTimeoutError

logger = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound="FacadeBase")
ENGINE_MODULE = "sglang.srt.entrypoints.engine"
ALL_TAGS = ("weights", "kv_cache", "cuda_graph")

MemoryMeter = Callable[[Sequence[int]], "int | None"]


# -- the shared facade --------------------------------------------------------------------
# operation -> io_struct request class (the HTTP endpoints take the same fields as JSON)
REQUESTS = {
    "update_weights_from_tensor": "UpdateWeightsFromTensorReqInput",
    "init_weights_update_group": "InitWeightsUpdateGroupReqInput",
    "update_weights_from_distributed": "UpdateWeightsFromDistributedReqInput",
    "destroy_weights_update_group": "DestroyWeightsUpdateGroupReqInput",
    "release_memory_occupation": "ReleaseMemoryOccupationReqInput",
    "resume_memory_occupation": "ResumeMemoryOccupationReqInput",
    "pause_generation": "PauseGenerationReqInput",
    "continue_generation": "ContinueGenerationReqInput",
}


class DeathSource(Protocol):
    error: str | None

    def add_listener(self, callback: Callable[[EngineDeadError], None]) -> None: ...

    def remove_listener(self, callback: Callable[[EngineDeadError], None]) -> None: ...

    def reports(self) -> list[dict[str, Any]]: ...


def request_fields(op: str, io: Any, **fields: Any) -> dict[str, Any]:
    """``fields`` checked against the release's request class for ``op`` (a field the release
    lacks may only be None); returns the fields that class has."""
    known = _fields(getattr(io, REQUESTS[op]))
    if known.issuperset(fields):
        return fields
    missing = [k for k, v in fields.items() if k not in known and v is not None]
    if missing:
        raise NotImplementedError(f"{REQUESTS[op]} of the installed SGLang has no field(s) {missing}")
    return {k: v for k, v in fields.items() if k in known}


class FacadeBase:
    """The public API; subclasses supply the transport (see the module docstring)."""

    release_timeout = 60.0  # seconds release_memory_occupation waits for memory to be freed
    flush_retries = 8

    _death: DeathSource | None

    def _setup(self, memory_meter: MemoryMeter | None, loop: asyncio.AbstractEventLoop | None) -> None:
        self._meter = memory_meter or memmeter.default_meter
        self._caps = capabilities()
        self._io = importlib.import_module(IO_STRUCT)
        self._closed = False
        self._close_lock = threading.Lock()
        self._sync_lock = threading.RLock()
        self._released: set[str] = set()
        self._tag_names = _memory_tags() or ALL_TAGS[:2]
        self._loop: asyncio.AbstractEventLoop = loop if loop is not None else asyncio.new_event_loop()
        self._owns_loop = loop is None
        # the tasks awaiting the engine; one listener (not one per call) cancels them on death
        self._inflight: set[asyncio.Task[Any]] = set()
        self._death_listener: Callable[[EngineDeadError], None] | None = None
        if self._death is not None:
            self._death_listener = _canceller(self._inflight)
            self._death.add_listener(self._death_listener)

    def _drop_death_listener(self) -> None:
        if self._death is not None and self._death_listener is not None:
            self._death.remove_listener(self._death_listener)
            self._death_listener = None

    # -- what a transport provides ------------------------------------------------------
    async def _request(self, op: str, fields: dict[str, Any] | None) -> Any:
        raise NotImplementedError

    def _generate_call(self, kwargs: dict[str, Any]) -> Awaitable[Any]:
        raise NotImplementedError

    def _generate_params(self) -> frozenset[str]:
        raise NotImplementedError

    async def _abort(self, rids: list[str] | None) -> list[str]:
        raise NotImplementedError

    def _serialize(self, payload: Any) -> Any:
        raise NotImplementedError

    def _tp_size(self) -> int:
        raise NotImplementedError

    def _server_arg(self, name: str) -> Any:
        """A server argument of the running engine; None when this transport does not know it."""
        raise NotImplementedError

    def _child_pids(self) -> list[int]:
        raise NotImplementedError

    def _server_info(self) -> dict[str, Any]:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    # -- plumbing ---------------------------------------------------------------------------
    def capabilities(self) -> dict[str, dict[str, str]]:
        """Per facade method: ``{"support": "native"|"adapted"|"unsupported", "note": ...}``."""
        return {name: cap.as_dict() for name, cap in self._caps.items()}

    def _require(self, method: str) -> None:
        cap = self._caps.get(method)
        if cap is not None and cap.support == UNSUPPORTED:
            raise NotImplementedError(f"{method} is not supported by the installed SGLang: {cap.note}")

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError(f"this {type(self).__name__} has been shut down")
        death = self._death
        if death is not None and death.error is not None:
            raise EngineDeadError(death.error, death.reports())

    async def _send(self, op: str, **fields: Any) -> Any:
        """Check ``fields`` against the release's request class, then hand them to the transport."""
        return await self._guarded(self._request(op, request_fields(op, self._io, **fields)))

    async def _guarded(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` unless the engine dies first (then EngineDeadError).

        No extra task and no per-call listener: the awaiting task joins ``_inflight``, which the
        death listener cancels (from the watchdog's thread, through the task's loop); that
        cancellation becomes the EngineDeadError."""
        death = self._death
        task = asyncio.current_task() if death is not None else None
        inflight = self._inflight
        if task is None or task in inflight:  # no death source, or an outer call guards already
            self._open_or_close(awaitable)
            return await awaitable
        inflight.add(task)
        try:
            self._open_or_close(awaitable)  # after joining: a death from now on cancels this task
        except BaseException:
            inflight.discard(task)
            raise
        try:
            return await awaitable
        except asyncio.CancelledError:
            if death is None or death.error is None:
                raise
            if hasattr(task, "uncancel"):
                task.uncancel()  # the cancellation was ours, not the caller's
            raise EngineDeadError(death.error, death.reports()) from None
        finally:
            inflight.discard(task)

    def _open_or_close(self, awaitable: Awaitable[Any]) -> None:
        """``_check_open``; when it raises, ``awaitable`` (never to be awaited) is closed first."""
        try:
            self._check_open()
        except BaseException:
            _close(awaitable)
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of our coroutines to completion from synchronous code."""
        self._open_or_close(coro)
        if asyncio._get_running_loop() is not None:
            coro.close()
            raise RuntimeError("an event loop is running in this thread: await the async_ variant instead")
        loop = self._loop
        if loop.is_running():  # the engine's loop runs in another thread: hand the call over
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
        with self._sync_lock:
            if self._owns_loop:
                asyncio.set_event_loop(loop)  # SGLang <= 0.5.3 reaches for the thread's loop itself
            return loop.run_until_complete(coro)

    # -- generation -------------------------------------------------------------------------
    async def async_generate(
        self,
        prompt: str | list[str] | None = None,
        sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None,
        input_ids: list[int] | list[list[int]] | None = None,
        return_logprob: bool | list[bool] = False,
        **kwargs: Any,
    ) -> Any:
        """Generate from text or token ids; returns upstream's dict (or list of dicts for a batch)."""
        if (prompt is None) == (input_ids is None):
            raise ValueError("give exactly one of prompt= and input_ids=")
        if kwargs:
            if kwargs.get("stream"):
                raise NotImplementedError("streaming is not part of the facade")
            params = self._generate_params()
            unknown = sorted(k for k in kwargs if k not in params)
            if unknown:
                raise TypeError(f"generate() of the installed SGLang does not take {unknown}")
        kwargs.update(
            prompt=prompt, sampling_params=sampling_params, input_ids=input_ids, return_logprob=return_logprob
        )
        return await self._guarded(self._generate_call(kwargs))

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(self.async_generate(*args, **kwargs))

    # -- weights ------------------------------------------------------------------------------
    async def async_update_weights_from_tensor(
        self,
        named_tensors: Sequence[tuple[str, Any]],
        load_format: str | None = None,
        flush_cache: bool = True,
        bucket_bytes: int | None = None,
    ) -> tuple[bool, str]:
        """Load ``(name, tensor)`` pairs into the engine (Hugging Face parameter names).

        The pairs travel in requests of at most ``bucket_bytes`` bytes each (default
        :data:`weightbuckets.DEFAULT_BUCKET_BYTES`; a larger tensor travels alone), as
        flattened buckets where the release has them, and the next request is prepared while
        the engine loads the current one; the cache is flushed once, after the last. With an
        explicit ``load_format`` the pairs go to upstream as given, in one request."""
        tensors = _check_named_tensors(named_tensors)
        self._check_tensor_devices(tensors)
        if load_format is not None:
            if bucket_bytes is not None:
                raise ValueError(
                    "bucket_bytes applies to the default format only, not to load_format=" + repr(load_format)
                )
            return _success(await self._send_tensor_request(tensors, load_format, flush_cache))
        bucket_cls = _flattened_bucket()
        size = weightbuckets.check_bucket_bytes(bucket_bytes)
        buckets = weightbuckets.plan(tensors, size, by_dtype=bucket_cls is not None)
        try:
            return await self._send_buckets(buckets, bucket_cls, flush_cache)
        finally:
            weightbuckets.release_ipc_memory(tensors)

    async def _send_buckets(
        self, buckets: list[list[tuple[str, Any]]], bucket_cls: Any, flush_cache: bool
    ) -> tuple[bool, str]:
        """Send ``buckets`` in order, one request in flight, the next one built meanwhile; stop
        at the first failure. Each payload stays referenced until its request has returned."""
        last = len(buckets) - 1
        pending: asyncio.Task[Any] | None = None
        try:
            for i, bucket in enumerate(buckets):
                payload: Any
                fmt: str | None
                if bucket_cls is None:
                    payload, fmt = bucket, None
                else:
                    payload, fmt = weightbuckets.flatten(bucket_cls, bucket), "flattened_bucket"
                if pending is not None:
                    result = _success(await pending)
                    pending = None
                    if not result[0]:
                        return result
                if i == last:
                    return _success(await self._send_tensor_request(payload, fmt, flush_cache))
                pending = asyncio.ensure_future(self._send_tensor_request(payload, fmt, False))
                await asyncio.sleep(0)  # let it reach the engine before the next bucket is built
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
        return True, "no tensors"

    async def _send_tensor_request(self, payload: Any, load_format: str | None, flush_cache: bool) -> Any:
        serialized = self._serialize(payload)
        return await self._send(
            "update_weights_from_tensor",
            serialized_named_tensors=[serialized for _ in range(self._tp_size())],
            load_format=load_format,
            flush_cache=flush_cache,
        )

    def _check_tensor_devices(self, tensors: list[tuple[str, Any]]) -> None:
        """CUDA tensors travel as CUDA IPC handles and each scheduler loads them on its own GPU:
        a tensor on another GPU makes the scheduler fail ("CUDA error: invalid argument", seen
        on two H200s) and the engine die. Refuse that before anything is sent."""
        tp = self._tp_size()
        base, step = self._server_arg("base_gpu_id"), self._server_arg("gpu_id_step") or 1
        for name, tensor in tensors:
            device = tensor.device
            if device.type != "cuda":
                continue
            if tp > 1:
                raise ValueError(
                    f"{name} is on {device}: with tp_size={tp} every rank would get handles to that one GPU's "
                    "memory, which the ranks on other GPUs cannot load. Pass CPU tensors (in-process engine: "
                    "shared memory, every rank loads them) or use update_weights_from_distributed"
                )
            index = device.index if device.index is not None else _current_cuda_device()
            if base is not None and index != int(base):
                raise ValueError(
                    f"{name} is on {device} but the engine runs on cuda:{base} (base_gpu_id; step {step}): "
                    f"its scheduler cannot load another GPU's memory. Move the tensors there "
                    f"(tensor.to('cuda:{base}')) or use update_weights_from_distributed"
                )

    def update_weights_from_tensor(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return self._run(self.async_update_weights_from_tensor(*args, **kwargs))

    async def async_init_weights_update_group(
        self,
        master_address: str,
        master_port: int,
        rank_offset: int,
        world_size: int,
        group_name: str = "weight_update_group",
        backend: str = "nccl",
    ) -> tuple[bool, str]:
        if not isinstance(master_port, int) or not 0 < master_port < 65536:
            raise ValueError(f"master_port must be a TCP port, got {master_port!r}")
        if not isinstance(world_size, int) or world_size < 2 or not 0 < rank_offset < world_size:
            raise ValueError(f"need world_size >= 2 and 0 < rank_offset < world_size, got {rank_offset}/{world_size}")
        out = await self._send(
            "init_weights_update_group",
            master_address=master_address,
            master_port=master_port,
            rank_offset=rank_offset,
            world_size=world_size,
            group_name=group_name,
            backend=backend,
        )
        return _success(out)

    def init_weights_update_group(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return self._run(self.async_init_weights_update_group(*args, **kwargs))

    async def async_update_weights_from_distributed(
        self,
        names: Sequence[str],
        dtypes: Sequence[Any],
        shapes: Sequence[Sequence[int]],
        group_name: str = "weight_update_group",
        flush_cache: bool = True,
        load_format: str | None = None,
    ) -> tuple[bool, str]:
        """Receive tensors broadcast by the trainer (rank 0 of the weight-update group)."""
        names, dtype_names, shape_lists = _check_distributed(names, dtypes, shapes)
        op = "update_weights_from_distributed"
        if self._caps[op].support == NATIVE:
            out = await self._send(
                op,
                names=names,
                dtypes=dtype_names,
                shapes=shape_lists,
                group_name=group_name,
                flush_cache=flush_cache,
                load_format=load_format,
            )
            return _success(out)
        if group_name != "weight_update_group" or load_format is not None:
            raise NotImplementedError("this SGLang release has one fixed update group and no load_format")
        result: tuple[bool, str] = (True, "no tensors")
        for name, dtype, shape in zip(names, dtype_names, shape_lists, strict=True):
            result = _success(await self._send(op, name=name, dtype=dtype, shape=shape))
            if not result[0]:
                return result
        return result

    def update_weights_from_distributed(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return self._run(self.async_update_weights_from_distributed(*args, **kwargs))

    async def async_destroy_weights_update_group(self, group_name: str = "weight_update_group") -> tuple[bool, str]:
        self._require("destroy_weights_update_group")
        return _success(await self._send("destroy_weights_update_group", group_name=group_name))

    def destroy_weights_update_group(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return self._run(self.async_destroy_weights_update_group(*args, **kwargs))

    # -- memory -------------------------------------------------------------------------------
    def _tags(self, tags: Iterable[str] | None) -> tuple[str, ...]:
        available = self._tag_names
        if tags is None:
            return tuple(available)
        if isinstance(tags, str):
            raise TypeError("tags must be a list of strings, not a string")
        chosen = tuple(dict.fromkeys(tags))
        unknown = [t for t in chosen if t not in ALL_TAGS]
        if unknown:
            raise ValueError(f"unknown memory tag(s) {unknown}; known: {list(ALL_TAGS)}")
        absent = [t for t in chosen if t not in available]
        if absent:
            raise NotImplementedError(
                f"memory tag(s) {absent} do not exist in the installed SGLang (it has {list(available)})"
            )
        return chosen

    async def _memory_call(self, kind: str, tags: tuple[str, ...]) -> None:
        supports_tags = self._caps["release_memory_occupation"].support == NATIVE
        if not supports_tags and set(tags) != set(self._tag_names):
            raise NotImplementedError(
                f"the installed SGLang has no memory tags: {kind} works on everything or nothing, not {list(tags)}"
            )
        op = f"{kind}_memory_occupation"
        if supports_tags:
            await self._send(op, tags=list(tags))
        else:
            await self._send(op)

    async def async_release_memory_occupation(self, tags: Iterable[str] | None = None) -> dict[str, Any]:
        """Free GPU memory by tag; returns only once the memory is really free (or raises)."""
        wanted = self._tags(tags)
        todo = tuple(t for t in wanted if t not in self._released)
        if not todo:
            return {"released": [], "already_released": list(wanted), "freed_bytes": 0}
        pids = self._child_pids()
        before = self._meter(pids)
        await self._memory_call("release", todo)
        self._released.update(todo)
        freed = await self._wait_for_release(pids, before)
        return {"released": list(todo), "already_released": [t for t in wanted if t not in todo], "freed_bytes": freed}

    async def _wait_for_release(self, pids: Sequence[int], before: int | None) -> int | None:
        if before is None:
            return None  # no meter here (CPU, no nvidia-smi): nothing to verify against
        deadline = time.monotonic() + self.release_timeout
        previous, delay = None, 0.005  # NVML reads in ~0.1 ms: poll fast, back off to 1 s
        while True:
            current = self._meter(pids)
            if current is not None and current < before and current == previous:
                return before - current  # dropped, and stable across two readings
            if time.monotonic() > deadline:
                raise MemoryReleaseTimeoutError(
                    f"release_memory_occupation returned but the engine's GPU memory did not drop and settle "
                    f"within {self.release_timeout:.0f}s (before {before} bytes, now {current})"
                )
            previous = current
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def release_memory_occupation(self, tags: Iterable[str] | None = None) -> dict[str, Any]:
        return self._run(self.async_release_memory_occupation(tags))

    async def async_resume_memory_occupation(self, tags: Iterable[str] | None = None) -> dict[str, Any]:
        wanted = self._tags(tags)
        todo = tuple(t for t in wanted if t in self._released)
        if not todo:
            return {"resumed": [], "not_released": list(wanted)}
        await self._memory_call("resume", todo)
        self._released.difference_update(todo)
        return {"resumed": list(todo), "not_released": [t for t in wanted if t not in todo]}

    def resume_memory_occupation(self, tags: Iterable[str] | None = None) -> dict[str, Any]:
        return self._run(self.async_resume_memory_occupation(tags))

    # -- cache, abort, pause ------------------------------------------------------------------
    async def async_flush_cache(self, abort_pending: bool = False, retries: int | None = None) -> bool:
        """Flush the radix cache; retried with backoff (bounded) while requests are pending."""
        attempts = self.flush_retries if retries is None else retries
        if abort_pending:
            await self.async_abort()
        if await self._try_flush(attempts):
            return True
        raise TimeoutError(f"flush_cache did not succeed after {attempts + 1} attempts (requests still pending?)")

    async def _try_flush(self, attempts: int) -> bool:
        """Send flush requests, with backoff, until one succeeds (True) or ``attempts + 1`` failed.
        The scheduler refuses a flush while requests are queued or in its running batch."""
        delay = 0.05
        for attempt in range(attempts + 1):
            if _success(await self._guarded(self._request("flush_cache", None)))[0]:
                return True
            if attempt < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        return False

    def flush_cache(self, abort_pending: bool = False, retries: int | None = None) -> bool:
        return self._run(self.async_flush_cache(abort_pending, retries))

    async def async_abort(self, rids: Iterable[str] | None = None) -> list[str]:
        """Abort the given requests, or all pending ones (None); returns the rids sent, as far as
        the transport knows them (the HTTP server aborts all without listing them)."""
        self._check_open()
        return await self._guarded(self._abort(_check_rids(rids)))

    def abort(self, rids: Iterable[str] | None = None) -> list[str]:
        return self._run(self.async_abort(rids))

    async def async_pause_generation(self, mode: str = "abort") -> None:
        """Stop generating: ``abort`` (return every request), ``retract`` or ``in_place`` (0.5.6+)."""
        self._require("pause_generation")
        if mode not in ("abort", "retract", "in_place"):
            raise ValueError(f"unknown pause mode {mode!r}; modes: abort, retract, in_place")
        if hasattr(self._io, "PauseGenerationReqInput"):
            await self._send("pause_generation", mode=mode)
        elif mode == "abort":
            await self._guarded(self._request("pause_generation", None))
        else:
            raise NotImplementedError(f"pause mode {mode!r} needs SGLang 0.5.6+; this release only aborts")

    def pause_generation(self, mode: str = "abort") -> None:
        return self._run(self.async_pause_generation(mode))

    async def async_continue_generation(self) -> None:
        self._require("continue_generation")
        if hasattr(self._io, "ContinueGenerationReqInput"):
            await self._send("continue_generation")
        else:
            await self._guarded(self._request("continue_generation", None))

    def continue_generation(self) -> None:
        return self._run(self.async_continue_generation())

    # -- info and lifecycle -------------------------------------------------------------------
    def get_server_info(self) -> dict[str, Any]:
        self._check_open()
        with self._sync_lock:
            if self._owns_loop:
                asyncio.set_event_loop(self._loop)
            return self._server_info()

    def shutdown(self) -> None:
        """End the processes this engine started (only those); idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._drop_death_listener()
            self._close_transport()
        finally:
            if self._owns_loop and not self._loop.is_running() and not self._loop.is_closed():
                _forget_if_current(self._loop)  # _run made it this thread's loop: leave no closed one there
                self._loop.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self: F) -> F:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    async def __aenter__(self: F) -> F:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.shutdown()


# -- argument checks --------------------------------------------------------------------------
def _check_named_tensors(named_tensors: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    import torch

    if isinstance(named_tensors, (str, bytes, dict)):
        raise TypeError("named_tensors must be a list of (name, tensor) pairs")
    out = []
    seen = set()
    for i, item in enumerate(named_tensors):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(f"named_tensors[{i}] must be a (name, tensor) pair, got {type(item).__name__}")
        name, tensor = item
        if not isinstance(name, str) or not name:
            raise TypeError(f"named_tensors[{i}]: the name must be a non-empty string, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"named_tensors[{i}] ({name}): expected a torch.Tensor, got {type(tensor).__name__}")
        if name in seen:
            raise ValueError(f"named_tensors: {name!r} appears twice")
        seen.add(name)
        out.append((name, tensor))
    if not out:
        raise ValueError("named_tensors is empty")
    return out


def _dtype_name(dtype: Any) -> str:
    import torch

    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    if isinstance(dtype, str) and isinstance(getattr(torch, dtype.removeprefix("torch."), None), torch.dtype):
        return dtype.removeprefix("torch.")
    raise TypeError(f"not a torch dtype: {dtype!r}")


def _check_distributed(
    names: Sequence[str], dtypes: Sequence[Any], shapes: Sequence[Sequence[int]]
) -> tuple[list[str], list[str], list[list[int]]]:
    if isinstance(names, str):
        raise TypeError("names must be a list of parameter names")
    if not (len(names) == len(dtypes) == len(shapes)):
        raise ValueError(f"names, dtypes and shapes differ in length ({len(names)}, {len(dtypes)}, {len(shapes)})")
    if not names:
        raise ValueError("no tensors to update")
    if len(set(names)) != len(names):
        raise ValueError("a name appears twice in names")
    shape_lists = []
    for name, shape in zip(names, shapes, strict=True):
        if not isinstance(name, str) or not name:
            raise TypeError(f"parameter names must be non-empty strings, got {name!r}")
        dims = list(shape)
        if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in dims):
            raise ValueError(f"{name}: shape must be non-negative integers, got {shape!r}")
        shape_lists.append(dims)
    return list(names), [_dtype_name(d) for d in dtypes], shape_lists


def _check_rids(rids: Iterable[str] | None) -> list[str] | None:
    if rids is None:
        return None
    if isinstance(rids, str):
        raise TypeError("rids must be a list of request ids, not a string")
    chosen = list(rids)
    if any(not isinstance(r, str) or not r for r in chosen):
        raise ValueError("rids must be non-empty strings")
    return chosen


def _success(out: Any) -> tuple[bool, str]:
    """Upstream returns ``(success, message)`` or an output object; the facade returns the pair."""
    if isinstance(out, tuple) and len(out) >= 2:
        return bool(out[0]), str(out[1])
    if hasattr(out, "success"):
        return bool(out.success), str(getattr(out, "message", ""))
    return bool(out), ""


def _forget_if_current(loop: asyncio.AbstractEventLoop) -> None:
    """Unset ``loop`` as this thread's event loop if it is: an upstream Engine created later in
    this thread would take that closed loop (0.5.23 asks the policy for it) and fail on it."""
    try:
        current = asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        return
    if current is loop:
        asyncio.set_event_loop(None)


def _close(awaitable: Awaitable[Any]) -> None:
    """Close a coroutine that will never be awaited (no "never awaited" warning)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


def _canceller(inflight: set[asyncio.Task[Any]]) -> Callable[[EngineDeadError], None]:
    """The death listener of one facade: cancel every task awaiting the engine, each through its
    own loop (the listener runs in the watchdog's thread). It holds the set, not the facade."""

    def cancel_all(error: EngineDeadError) -> None:
        for task in list(inflight):
            try:
                task.get_loop().call_soon_threadsafe(task.cancel)
            except RuntimeError:  # its loop is closed: nothing is waiting there any more
                pass

    return cancel_all


def _current_cuda_device() -> int:
    import torch

    return int(torch.cuda.current_device())
