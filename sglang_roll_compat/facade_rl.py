"""The rest of the RL-facing Engine API, on top of :class:`facade.FacadeBase`.

Weight updates from disk and IPC, reading weights back, LoRA adapters, weight versions,
embeddings and scores, the profiler, sessions and weight-update sessions: each method exists once,
here, as a coroutine (``async_<name>``) plus its sync twin; it checks its input, refuses what the
installed release lacks (``NotImplementedError`` naming the first supported release that has it),
and hands the release's own request fields to the transport (``_send``), like the methods in
:mod:`facade`.

What a release has is read at runtime from its real classes (``io_struct`` request classes and
their fields, ``TokenizerManager`` methods); only the "first supported release that has it"
names are data (:data:`FIRST_RELEASE`, read from the wheels of every supported release).
"""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from . import weightprobe, weightsync
from .capabilities import ADAPTED, NATIVE, RL_REQUESTS, _fields, since
from .facade import REQUESTS, FacadeBase, _check_named_tensors, _success

logger = logging.getLogger(__name__)

REQUESTS.update(RL_REQUESTS)

# capabilities that send no request when adapted (so a missing route does not matter then)
SENDS_NOTHING_WHEN_ADAPTED = frozenset({"begin_weight_update", "end_weight_update"})
PROFILE_ACTIVITIES = ("CPU", "GPU", "MEM", "CUDA_PROFILER", "RPD")

# extra request fields for the weight updates of facade.py (weight_version), per operation,
# for the duration of one facade call (set by the overrides below, read by ``_send``)
_EXTRA_FIELDS: contextvars.ContextVar[dict[str, dict[str, Any]] | None] = contextvars.ContextVar(
    "sglang_roll_compat_extra_fields", default=None
)


def lora_names(lora_paths: Any) -> list[str]:
    """The adapter names in a ``lora_paths`` server argument (as given, or as SGLang rewrote it)."""
    if not lora_paths:
        return []
    if isinstance(lora_paths, Mapping):
        return [str(k) for k in lora_paths]
    if isinstance(lora_paths, str):
        lora_paths = [lora_paths]
    names = []
    for item in lora_paths:
        if isinstance(item, str):
            names.append(item.split("=", 1)[0])
        elif isinstance(item, Mapping) and "lora_name" in item:
            names.append(str(item["lora_name"]))
        elif hasattr(item, "lora_name"):
            names.append(str(item.lora_name))
    return names


class RLFacade(FacadeBase):
    """The public API of :mod:`facade` plus the methods of this module (see its docstring)."""

    def _setup(self, memory_meter: Any, loop: Any) -> None:
        super()._setup(memory_meter, loop)
        self._sessions: set[str] = set()
        self._weight_update_open = False
        lora_paths = self._server_arg("lora_paths")
        self._loras: set[str] | None = set(lora_names(lora_paths))
        if not self._knows_server_args():
            self._loras = None  # a server someone else started: its adapters are not known here

    # -- what a transport provides (beyond FacadeBase's) ------------------------------------
    def _knows_server_args(self) -> bool:
        """Whether this object knows the engine's server arguments (and so its LoRA adapters)."""
        return True

    def _local_paths(self) -> bool:
        """Whether a path given here means the same file to the engine (same machine)."""
        return True

    async def _read_weight_version(self) -> str | None:
        raise NotImplementedError

    async def _set_weight_version(self, version: str) -> tuple[bool, str]:
        raise NotImplementedError

    async def _profile(self, start: bool, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    async def _encode(self, fields: dict[str, Any]) -> Any:
        raise NotImplementedError

    async def _score(self, fields: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _profile_fields(self) -> frozenset[str]:
        """The profiler options the installed release takes."""
        raise NotImplementedError

    # -- plumbing -------------------------------------------------------------------------------
    async def _send(self, op: str, **fields: Any) -> Any:
        extra = (_EXTRA_FIELDS.get() or {}).get(op)
        if extra:
            fields = {**fields, **extra}
        return await super()._send(op, **fields)

    def _check_weight_version(self, weight_version: str | None) -> None:
        if weight_version is None:
            return
        if not isinstance(weight_version, str) or not weight_version:
            raise TypeError(f"weight_version must be a non-empty string, got {weight_version!r}")
        self._require("update_weight_version")

    async def _versioned(self, op: str, weight_version: str | None, call: Any) -> tuple[bool, str]:
        """Run a weight update of :mod:`facade` with ``weight_version`` in each of its requests;
        after it succeeded, record the version where the release does not (see capabilities)."""
        self._check_weight_version(weight_version)
        if weight_version is None:
            result: tuple[bool, str] = await call()
            return result
        token = _EXTRA_FIELDS.set({op: {"weight_version": weight_version}})
        try:
            result = await call()
        finally:
            _EXTRA_FIELDS.reset(token)
        await self._after_versioned_update(result, weight_version)
        return result

    async def _after_versioned_update(self, result: tuple[bool, str], weight_version: str | None) -> None:
        if weight_version is not None and result[0] and self._caps["update_weight_version"].support == ADAPTED:
            await self._set_weight_version(weight_version)

    # -- weight_version on the weight updates of facade.py ----------------------------------------
    async def async_update_weights_from_tensor(
        self, named_tensors: Sequence[tuple[str, Any]], *args: Any, weight_version: str | None = None, **kwargs: Any
    ) -> tuple[bool, str]:
        """As :meth:`FacadeBase.async_update_weights_from_tensor` (same arguments, passed through);
        ``weight_version`` (0.5.2+) tags the weights (read it back with ``get_weight_version``)."""
        base = super().async_update_weights_from_tensor
        call = lambda: base(named_tensors, *args, **kwargs)  # noqa: E731
        return await self._versioned("update_weights_from_tensor", weight_version, call)

    async def async_update_weights_from_distributed(
        self, *args: Any, weight_version: str | None = None, **kwargs: Any
    ) -> tuple[bool, str]:
        """As :meth:`FacadeBase.async_update_weights_from_distributed`, with ``weight_version``."""
        base = super().async_update_weights_from_distributed
        return await self._versioned("update_weights_from_distributed", weight_version, lambda: base(*args, **kwargs))

    # -- weights from disk, IPC; reading them back -----------------------------------------------
    async def async_update_weights_from_disk(
        self, model_path: str, load_format: str | None = None, weight_version: str | None = None
    ) -> tuple[bool, str]:
        """Load the checkpoint at ``model_path`` (a Hugging Face directory or hub id) in place."""
        if not isinstance(model_path, (str, os.PathLike)) or not str(model_path):
            raise TypeError(f"model_path must be a non-empty path or hub id, got {model_path!r}")
        path = os.fspath(model_path)
        if self._local_paths() and (os.path.isabs(path) or path.startswith(".")) and not os.path.exists(path):
            raise FileNotFoundError(f"update_weights_from_disk: {path} does not exist")
        _check_load_format(load_format)
        self._check_weight_version(weight_version)
        if load_format is None and self._server_arg("load_format") == "dummy":
            load_format = "auto"  # the engine's own format would be the dummy loader, which reads no files
        # SGLang's scheduler flushes its cache after the load and asserts that the flush worked
        # (0.5.2 among others): a request that has just returned may still sit in its running
        # batch, and the assertion then kills the scheduler. Wait (bounded) until it is idle.
        if not await self._try_flush(self.flush_retries):
            logger.warning(
                "update_weights_from_disk: the engine still has requests running; SGLang's "
                "scheduler may fail its flush after the load"
            )
        out = await self._send(
            "update_weights_from_disk", model_path=path, load_format=load_format, weight_version=weight_version
        )
        result = _success(out)
        await self._after_versioned_update(result, weight_version)
        return result

    def update_weights_from_disk(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return self._run(self.async_update_weights_from_disk(*args, **kwargs))

    async def async_update_weights_from_ipc(
        self, zmq_handles: Mapping[str, str], flush_cache: bool = True, weight_version: str | None = None
    ) -> tuple[bool, str]:
        """Load weights a checkpoint-engine publishes over ZMQ (``{device uuid: zmq address}``)."""
        self._require("update_weights_from_ipc")
        if not isinstance(zmq_handles, Mapping) or not zmq_handles:
            raise TypeError("zmq_handles must be a non-empty mapping of device uuid -> ZMQ address")
        for key, value in zmq_handles.items():
            if not isinstance(key, str) or not key or not isinstance(value, str) or not value:
                raise TypeError(f"zmq_handles: {key!r} -> {value!r} is not a pair of non-empty strings")
        self._check_weight_version(weight_version)
        out = await self._send(
            "update_weights_from_ipc",
            zmq_handles=dict(zmq_handles),
            flush_cache=flush_cache,
            weight_version=weight_version,
        )
        result = _success(out)
        await self._after_versioned_update(result, weight_version)
        return result

    def update_weights_from_ipc(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return self._run(self.async_update_weights_from_ipc(*args, **kwargs))

    async def async_get_weights_by_name(self, name: str, truncate_size: int = 100) -> Any:
        """The first ``truncate_size`` rows of parameter ``name`` as nested lists (upstream's shape)."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty parameter name, got {name!r}")
        if isinstance(truncate_size, bool) or not isinstance(truncate_size, int) or truncate_size < 1:
            raise ValueError(f"truncate_size must be a positive integer, got {truncate_size!r}")
        out = await self._send("get_weights_by_name", name=name, truncate_size=truncate_size)
        if out is None:
            raise LookupError(
                f"the engine returned no weights for {name!r}: no such parameter, or this model class has no "
                "get_weights_by_name in the installed SGLang (its scheduler log says which)"
            )
        return out

    def get_weights_by_name(self, name: str, truncate_size: int = 100) -> Any:
        return self._run(self.async_get_weights_by_name(name, truncate_size))

    # -- verifying the engine's weights ---------------------------------------------------------
    async def async_verify_weights(self, named_tensors: Sequence[tuple[str, Any]]) -> weightsync.WeightReport:
        """Prove that the engine holds exactly ``named_tensors`` (Hugging Face names): every
        scheduler fingerprints its own slice of each parameter where it lives (two 64-bit checksums
        of the raw bytes, computed on the weights' own device) and only those fingerprints travel back; a name
        whose bytes differ is fetched and reported with its largest absolute difference. See
        :class:`weightsync.WeightReport` for what the report holds."""
        tensors = _check_named_tensors(named_tensors)
        self._require("verify_weights")
        pp = self._server_arg("pp_size")
        if pp is not None and int(pp) > 1:
            raise NotImplementedError("verify_weights does not cover pipeline parallelism (pp_size > 1) yet")
        layout = await self._weight_layout()
        params = layout[0]["params"]
        fused = layout[0].get("fused", {})
        matched: list[str] = []
        mismatched: list[weightsync.Mismatch] = []
        unknown: list[weightsync.UnknownName] = []
        known_hf = weightsync.hf_names(list(params), fused)
        covered: set[str] = set()
        todo: list[tuple[str, Any, str, list[weightsync.Shard], str]] = []  # name, tensor, param, shards, dtype
        for name, tensor in tensors:
            target, part = (name, None) if name in params else weightsync.engine_name(name)
            if target not in params and name == weightsync.TIED[0] and weightsync.TIED[1] in params:
                target, part = weightsync.TIED[1], None  # tied embeddings: the engine keeps one copy
            if target not in params:
                unknown.append(weightsync.UnknownName(name, weightsync.suggestions(name, known_hf)))
                continue
            covered.add(name if target == name or part is not None else target)
            try:
                if part is not None and target not in fused:
                    raise ValueError(f"{target} is not a fused parameter this release describes")
                rank_shards = weightsync.shards(
                    list(tensor.shape), [r["params"][target][0] for r in layout], part, fused.get(target)
                )
                weightsync.segment(target, rank_shards)
            except ValueError as exc:
                mismatched.append(weightsync.Mismatch(name, None, f"not comparable: {exc}"))
                continue
            todo.append((name, tensor, target, rank_shards, str(params[target][1])))
        if todo:
            matched, more = await self._compare_fingerprints(todo)
            mismatched.extend(more)
        missing = tuple(n for n in known_hf if n not in covered)
        report = weightsync.WeightReport(tuple(matched), tuple(mismatched), missing, tuple(unknown))
        (logger.info if report.ok else logger.warning)("%s", report)
        return report

    def verify_weights(self, named_tensors: Sequence[tuple[str, Any]]) -> weightsync.WeightReport:
        return self._run(self.async_verify_weights(named_tensors))

    async def _weight_probe(self, payload: dict[str, Any]) -> list[list[dict[str, Any]]]:
        """One reserved get_weights_by_name request; per data-parallel replica, every TP rank's answer."""
        out = await self._send("get_weights_by_name", name=weightprobe.request_name(payload), truncate_size=1)
        replicas = _probe_replicas(out)
        if replicas is None:
            version = getattr(importlib.import_module("sglang"), "__version__", "?")
            raise NotImplementedError(
                f"verify_weights: the schedulers of this engine (SGLang {version}) did not answer the "
                f"fingerprint request (answer: {str(out)[:120]!r}); it needs the shim's scheduler hook, which "
                "engines launched by sglang_roll_compat (Engine, ServerEngine, the ROLL patch) have"
            )
        for ranks in replicas:
            for answer in ranks:
                if "error" in answer:
                    raise RuntimeError(f"verify_weights: TP rank {answer.get('rank')} failed: {answer['error']}")
        return replicas

    async def _weight_layout(self) -> list[dict[str, Any]]:
        """Every TP rank's parameters (local shapes, dtypes, fused parts): asked once per engine."""
        cached: list[dict[str, Any]] | None = getattr(self, "_weights_layout", None)
        if cached is None:
            cached = (await self._weight_probe({"op": "describe"}))[0]
            self._weights_layout = cached
        return cached

    async def _compare_fingerprints(
        self, todo: list[tuple[str, Any, str, list[weightsync.Shard], str]]
    ) -> tuple[list[str], list[weightsync.Mismatch]]:
        segments = [weightsync.segment(target, rank_shards) for _, _, target, rank_shards, _ in todo]
        # the expected fingerprints are computed here while the schedulers compute theirs
        expected_job = asyncio.get_running_loop().run_in_executor(None, _expected_fingerprints, todo)
        try:
            replicas = await self._weight_probe({"op": "fingerprint", "segments": segments})
        except BaseException:
            expected_job.cancel()
            raise
        expected = await expected_job
        matched: list[str] = []
        differ: list[tuple[int, str]] = []  # (index into todo, reason)
        for i, (name, _tensor, _target, rank_shards, _dtype) in enumerate(todo):
            reason = _first_difference(rank_shards, expected[i], [ranks for ranks in replicas], i)
            if reason:
                differ.append((i, reason))
            else:
                matched.append(name)
        mismatched: list[weightsync.Mismatch] = []
        if differ:
            fetch = [segments[i] for i, _ in differ]
            fetched = await self._weight_probe({"op": "fetch", "segments": fetch})
            for j, (i, reason) in enumerate(differ):
                name, tensor, _target, rank_shards, dtype = todo[i]
                worst: float | None = 0.0
                for ranks in fetched:
                    values = [ranks[s.rank]["values"][j] for s in rank_shards]
                    diff = weightsync.max_abs_diff(tensor, rank_shards, values, dtype)
                    worst = None if diff is None or worst is None else max(worst, diff)
                mismatched.append(weightsync.Mismatch(name, worst, reason))
        return matched, mismatched

    # -- weight versions ----------------------------------------------------------------------
    async def async_get_weight_version(self) -> str | None:
        """The engine's current weight version (None until one is set)."""
        self._require("get_weight_version")
        self._check_open()
        return await self._guarded(self._read_weight_version())

    def get_weight_version(self) -> str | None:
        return self._run(self.async_get_weight_version())

    async def async_update_weight_version(self, new_version: str) -> tuple[bool, str]:
        """Set the weight version without touching the weights."""
        if not isinstance(new_version, str) or not new_version:
            raise TypeError(f"new_version must be a non-empty string, got {new_version!r}")
        self._require("update_weight_version")
        self._check_open()
        return await self._guarded(self._set_weight_version(new_version))

    def update_weight_version(self, new_version: str) -> tuple[bool, str]:
        return self._run(self.async_update_weight_version(new_version))

    # -- weight-update sessions -------------------------------------------------------------------
    async def async_begin_weight_update(self, selector: str = "all") -> tuple[bool, str]:
        """Open a weight-update session (0.5.21+: restores packed weights); close it with
        ``end_weight_update``. Before 0.5.21 each update is final as it loads: only the pairing
        is checked."""
        if not isinstance(selector, str) or not selector:
            raise TypeError(f"selector must be a non-empty string, got {selector!r}")
        if self._weight_update_open:
            raise RuntimeError("a weight-update session is already open: call end_weight_update() first")
        if self._caps["begin_weight_update"].support == NATIVE:
            result = _success(await self._send("begin_weight_update", selector=selector))
        else:
            if selector != "all":
                raise NotImplementedError(f"selector {selector!r}: {since('begin_weight_update')}")
            self._check_open()
            result = (True, "no weight-update sessions in this release: every update is final as it loads")
        self._weight_update_open = result[0]
        return result

    def begin_weight_update(self, selector: str = "all") -> tuple[bool, str]:
        return self._run(self.async_begin_weight_update(selector))

    async def async_end_weight_update(self) -> tuple[bool, str]:
        if not self._weight_update_open:
            raise RuntimeError("no weight-update session is open: call begin_weight_update() first")
        if self._caps["end_weight_update"].support == NATIVE:
            result = _success(await self._send("end_weight_update"))
        else:
            self._check_open()
            result = (True, "no weight-update sessions in this release: the weights were final already")
        self._weight_update_open = False
        return result

    def end_weight_update(self) -> tuple[bool, str]:
        return self._run(self.async_end_weight_update())

    # -- LoRA -----------------------------------------------------------------------------------
    def _check_lora_enabled(self) -> None:
        if not self._knows_server_args():
            return
        enabled = self._server_arg("enable_lora")
        if not enabled and not self._server_arg("lora_paths"):
            raise ValueError(
                "LoRA is not enabled on this engine: start it with enable_lora=True (and max_lora_rank, "
                "lora_target_modules) or with lora_paths"
            )

    def _lora_result(self, out: Any, name: str, loaded: bool) -> tuple[bool, str]:
        """Upstream's LoRA answer (an output object in process, success/message over HTTP) as
        ``(success, message)``; the adapters it lists loaded become the ones this facade knows."""
        if hasattr(out, "success"):
            success, message = bool(out.success), getattr(out, "error_message", None) or ""
        else:
            success, message = _success(out)
        adapters = getattr(out, "loaded_adapters", None)
        if success and self._loras is not None:
            if isinstance(adapters, Mapping):
                self._loras = {str(k) for k in adapters}
            elif loaded:
                self._loras.add(name)
            else:
                self._loras.discard(name)
        return success, str(message or ("Success" if success else ""))

    def _check_new_lora(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"the adapter name must be a non-empty string, got {name!r}")
        self._check_lora_enabled()
        if self._loras is not None and name in self._loras:
            raise ValueError(f"a LoRA adapter named {name!r} is loaded already: unload it first")

    async def async_load_lora_adapter(self, name: str, path: str, pinned: bool = False) -> tuple[bool, str]:
        """Load the PEFT adapter at ``path`` under ``name`` (use it with ``generate(lora_path=name)``)."""
        self._require("load_lora_adapter")
        self._check_new_lora(name)
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise TypeError(f"path must be a non-empty path or hub id, got {path!r}")
        path = os.fspath(path)
        if self._local_paths() and (os.path.isabs(path) or path.startswith(".")) and not os.path.exists(path):
            raise FileNotFoundError(f"load_lora_adapter: {path} does not exist")
        out = await self._send("load_lora_adapter", lora_name=name, lora_path=path, pinned=pinned or None)
        return self._lora_result(out, name, loaded=True)

    def load_lora_adapter(self, name: str, path: str, pinned: bool = False) -> tuple[bool, str]:
        return self._run(self.async_load_lora_adapter(name, path, pinned))

    async def async_load_lora_adapter_from_tensors(
        self, name: str, tensors: Mapping[str, Any], config: Mapping[str, Any], pinned: bool = False
    ) -> tuple[bool, str]:
        """Load an adapter from ``{PEFT parameter name: tensor}`` and its PEFT config dict."""
        import torch

        self._require("load_lora_adapter_from_tensors")
        self._check_new_lora(name)
        if not isinstance(tensors, Mapping) or not tensors:
            raise TypeError("tensors must be a non-empty mapping of parameter name -> torch.Tensor")
        for key, value in tensors.items():
            if not isinstance(key, str) or not key or not isinstance(value, torch.Tensor):
                raise TypeError(f"tensors: {key!r} must map a non-empty name to a torch.Tensor")
        if not isinstance(config, Mapping) or "r" not in config or "target_modules" not in config:
            raise ValueError("config must be the adapter's PEFT config dict (with 'r' and 'target_modules')")
        known = _fields(getattr(self._io, RL_REQUESTS["load_lora_adapter_from_tensors"]))
        payload = self._serialize(dict(tensors))
        # the tensors field is one payload up to 0.5.16 and one per tensor-parallel rank from 0.5.17
        if "serialized_named_tensors" in known:
            tensor_field = {"serialized_named_tensors": [payload for _ in range(self._tp_size())]}
        else:
            tensor_field = {"serialized_tensors": payload}
        out = await self._send(
            "load_lora_adapter_from_tensors",
            lora_name=name,
            config_dict=dict(config),
            pinned=pinned or None,
            **tensor_field,
        )
        return self._lora_result(out, name, loaded=True)

    def load_lora_adapter_from_tensors(self, *args: Any, **kwargs: Any) -> tuple[bool, str]:
        return self._run(self.async_load_lora_adapter_from_tensors(*args, **kwargs))

    async def async_unload_lora_adapter(self, name: str) -> tuple[bool, str]:
        self._require("unload_lora_adapter")
        if not isinstance(name, str) or not name:
            raise TypeError(f"the adapter name must be a non-empty string, got {name!r}")
        self._check_lora_enabled()
        if self._loras is not None and name not in self._loras:
            raise ValueError(f"no LoRA adapter named {name!r} is loaded (loaded: {sorted(self._loras)})")
        out = await self._send("unload_lora_adapter", lora_name=name)
        return self._lora_result(out, name, loaded=False)

    def unload_lora_adapter(self, name: str) -> tuple[bool, str]:
        return self._run(self.async_unload_lora_adapter(name))

    @property
    def lora_adapters(self) -> list[str] | None:
        """The adapters this facade knows to be loaded (None: a server someone else started)."""
        return None if self._loras is None else sorted(self._loras)

    # -- sessions ---------------------------------------------------------------------------------
    async def async_open_session(self, capacity_of_str_len: int, session_id: str | None = None) -> str:
        """Open a multi-turn session; returns its id (pass it to ``generate(session_id=...)``)."""
        if isinstance(capacity_of_str_len, bool) or not isinstance(capacity_of_str_len, int) or capacity_of_str_len < 1:
            raise ValueError(f"capacity_of_str_len must be a positive integer, got {capacity_of_str_len!r}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise TypeError(f"session_id must be a non-empty string or None, got {session_id!r}")
        if session_id is not None and session_id in self._sessions:
            raise ValueError(f"session {session_id!r} is open already")
        out = await self._send("open_session", capacity_of_str_len=capacity_of_str_len, session_id=session_id)
        if not isinstance(out, str) or not out:
            raise RuntimeError(f"the engine did not open the session (it answered {out!r}); is the id taken?")
        self._sessions.add(out)
        return out

    def open_session(self, capacity_of_str_len: int, session_id: str | None = None) -> str:
        return self._run(self.async_open_session(capacity_of_str_len, session_id))

    async def async_close_session(self, session_id: str) -> None:
        if session_id not in self._sessions:
            raise ValueError(f"no session {session_id!r} was opened through this engine")
        await self._send("close_session", session_id=session_id)
        self._sessions.discard(session_id)

    def close_session(self, session_id: str) -> None:
        return self._run(self.async_close_session(session_id))

    # -- generate: LoRA adapters and sessions checked ---------------------------------------------
    async def async_generate(
        self,
        prompt: str | list[str] | None = None,
        sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None,
        input_ids: list[int] | list[list[int]] | None = None,
        return_logprob: bool | list[bool] = False,
        *,
        session_id: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """As :meth:`FacadeBase.async_generate`; ``lora_path`` (a name or a list, one per prompt)
        must name loaded adapters, ``session_id`` a session opened here (sent as the release's
        ``session_params``; ``kwargs["session_params"]`` passes more of them, e.g. ``rid``)."""
        lora = kwargs.get("lora_path")
        if lora is not None:
            wanted = [lora] if isinstance(lora, str) else list(lora)
            if any(w is not None and (not isinstance(w, str) or not w) for w in wanted):
                raise TypeError(f"lora_path must be an adapter name or a list of them (None: base model), got {lora!r}")
            if self._loras is not None:
                unknown = sorted({w for w in wanted if w is not None and w not in self._loras})
                if unknown:
                    raise ValueError(f"LoRA adapter(s) {unknown} are not loaded (loaded: {sorted(self._loras)})")
        if session_id is not None:
            if session_id not in self._sessions:
                raise ValueError(f"no session {session_id!r} was opened through this engine")
            params = dict(kwargs.get("session_params") or {})
            if params.get("id", session_id) != session_id:
                raise ValueError("session_id and session_params['id'] differ")
            params["id"] = session_id
            kwargs["session_params"] = params
        return await super().async_generate(prompt, sampling_params, input_ids, return_logprob, **kwargs)

    # -- profiler -----------------------------------------------------------------------------------
    async def async_start_profile(
        self,
        output_dir: str | None = None,
        num_steps: int | None = None,
        activities: Sequence[str] | None = None,
        with_stack: bool | None = None,
        record_shapes: bool | None = None,
        **options: Any,
    ) -> None:
        """Start the torch profiler in the scheduler(s); options the release lacks are refused."""
        if output_dir is not None and (not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir)):
            raise TypeError(f"output_dir must be a non-empty path, got {output_dir!r}")
        if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1):
            raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
        if activities is not None:
            if isinstance(activities, str):
                raise TypeError("activities must be a list of strings, not a string")
            unknown = [a for a in activities if a not in PROFILE_ACTIVITIES]
            if unknown or not activities:
                raise ValueError(f"unknown profiler activities {unknown}; known: {list(PROFILE_ACTIVITIES)}")
        fields = dict(
            output_dir=os.fspath(output_dir) if output_dir is not None else None,
            num_steps=num_steps,
            activities=list(activities) if activities is not None else None,
            with_stack=with_stack,
            record_shapes=record_shapes,
            **options,
        )
        known = self._profile_fields()
        missing = sorted(k for k, v in fields.items() if v is not None and k not in known)
        if missing:
            raise NotImplementedError(
                f"start_profile of the installed SGLang takes no {missing} (it takes {sorted(known)})"
            )
        self._check_open()
        await self._guarded(self._profile(True, {k: v for k, v in fields.items() if v is not None}))

    def start_profile(self, *args: Any, **kwargs: Any) -> None:
        return self._run(self.async_start_profile(*args, **kwargs))

    async def async_stop_profile(self) -> None:
        self._check_open()
        await self._guarded(self._profile(False, {}))

    def stop_profile(self) -> None:
        return self._run(self.async_stop_profile())

    # -- embeddings and scores ---------------------------------------------------------------------
    async def async_encode(
        self, prompt: str | list[str] | None = None, input_ids: list[int] | list[list[int]] | None = None, **kwargs: Any
    ) -> Any:
        """Embeddings (an embedding model: ``is_embedding=True``); upstream's dict, or a list for a batch."""
        if (prompt is None) == (input_ids is None):
            raise ValueError("give exactly one of prompt= and input_ids=")
        known = _fields(getattr(self._io, RL_REQUESTS["encode"])) - {"text", "input_ids", "stream"}
        unknown = sorted(k for k in kwargs if k not in known)
        if unknown:
            raise TypeError(f"encode() of the installed SGLang does not take {unknown}")
        fields = {"text": prompt, "input_ids": input_ids, **kwargs}
        self._check_open()
        return await self._guarded(self._encode({k: v for k, v in fields.items() if v is not None}))

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        return self._run(self.async_encode(*args, **kwargs))

    async def async_score(
        self,
        query: str | list[int],
        items: Sequence[str] | Sequence[list[int]],
        label_token_ids: Sequence[int],
        apply_softmax: bool = False,
        item_first: bool = False,
    ) -> list[list[float]]:
        """Per item, the probabilities of ``label_token_ids`` after query + item (reward models)."""
        self._require("score")
        text = isinstance(query, str)
        if not text and not (isinstance(query, list) and all(isinstance(t, int) for t in query)):
            raise TypeError("query must be a string or a list of token ids")
        if isinstance(items, str) or not isinstance(items, Sequence) or not items:
            raise TypeError("items must be a non-empty list of strings (or of token-id lists)")
        for i, item in enumerate(items):
            ok = isinstance(item, str) if text else isinstance(item, list) and all(isinstance(t, int) for t in item)
            if not ok:
                raise TypeError(f"items[{i}] must be {'a string' if text else 'a list of token ids'}, like the query")
        labels = list(label_token_ids)
        if not labels or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in labels):
            raise ValueError(f"label_token_ids must be non-negative token ids, got {label_token_ids!r}")
        fields = dict(
            query=query, items=list(items), label_token_ids=labels, apply_softmax=apply_softmax, item_first=item_first
        )
        self._check_open()
        out: list[list[float]] = await self._guarded(self._score(fields))
        return out

    def score(self, *args: Any, **kwargs: Any) -> list[list[float]]:
        return self._run(self.async_score(*args, **kwargs))


def _expected_fingerprints(
    todo: Sequence[tuple[str, Any, str, list[weightsync.Shard], str]],
) -> list[dict[int, dict[str, Any]]]:
    """Per tensor, per rank holding a slice of it, the fingerprint that rank must report (one
    device read for all of them: :func:`weightprobe.fingerprints`)."""
    held = [
        (i, tensor, s, dtype)
        for i, (_n, tensor, _target, shards, dtype) in enumerate(todo)
        for s in shards
        if s.length or s.dim < 0
    ]
    slices = (weightsync.expected_slice(tensor, s, dtype) for _, tensor, s, dtype in held)
    out: list[dict[int, dict[str, Any]]] = [{} for _ in todo]
    for (i, _, s, _), fp in zip(held, weightprobe.fingerprints(slices), strict=True):
        assert fp is not None
        out[i][s.rank] = fp
    return out


def _first_difference(
    rank_shards: Sequence[weightsync.Shard],
    expected: Mapping[int, dict[str, Any]],
    replicas: Sequence[Sequence[Mapping[str, Any]]],
    index: int,
) -> str:
    """Why the ranks' fingerprints of tensor ``index`` differ from ``expected`` ("" when they agree)."""
    for shard in rank_shards:
        want = expected.get(shard.rank)
        if want is None:
            continue
        for replica, ranks in enumerate(replicas):
            got = ranks[shard.rank]["fingerprints"][index]
            where = f"TP rank {shard.rank}" + (f" of DP replica {replica}" if len(replicas) > 1 else "")
            if got is None:
                return f"{where} holds no such slice"
            if got["shape"] != want["shape"] or got["dtype"] != want["dtype"]:
                return f"{where} holds {got['dtype']}{got['shape']}, expected {want['dtype']}{want['shape']}"
            if got["word_sum"] != want["word_sum"] or got["weighted_sum"] != want["weighted_sum"]:
                return f"bytes differ on {where}"
    return ""


def _probe_replicas(out: Any) -> list[list[dict[str, Any]]] | None:
    """The scheduler hook's answer (one per data-parallel replica) as lists of rank answers;
    None when the answer is not the hook's (upstream's own read-out, or nothing)."""
    answer = weightprobe.decode(out)
    if answer is not None:
        if answer.get("sglang_roll_compat") == weightprobe.PROTOCOL and isinstance(answer.get("ranks"), list):
            return [answer["ranks"]]
        return None
    if isinstance(out, list) and out and all(isinstance(o, list) for o in out):  # dp_size > 1
        replicas = []
        for o in out:
            one = _probe_replicas(o)
            if one is None:
                return None
            replicas.extend(one)
        return replicas
    return None


def _check_load_format(load_format: str | None) -> None:
    """``load_format`` checked against the installed release's ``LoadFormat`` values."""
    if load_format is None:
        return
    if not isinstance(load_format, str):
        raise TypeError(f"load_format must be a string, got {load_format!r}")
    try:
        formats = [f.value for f in importlib.import_module("sglang.srt.configs.load_config").LoadFormat]
    except (ImportError, AttributeError):
        return
    if load_format not in formats:
        raise ValueError(f"unknown load_format {load_format!r}; the installed SGLang knows {formats}")
