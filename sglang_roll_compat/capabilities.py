"""What the installed SGLang release can do, per facade method: read at runtime from its real
classes (``io_struct`` request classes and their fields, ``TokenizerManager`` methods), never from
a version table. Only the names of "the first supported release that has it", used in
refusals, are data (:data:`FIRST_RELEASE`, read from the wheels of every supported release).

Both facades (:mod:`facade`, :mod:`facade_rl`) and the server engine read this module; it
imports none of them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import Any

IO_STRUCT = "sglang.srt.managers.io_struct"
NATIVE, ADAPTED, UNSUPPORTED = "native", "adapted", "unsupported"

# operation -> io_struct request class (the HTTP endpoints take the same fields as JSON)
RL_REQUESTS = {
    "update_weights_from_disk": "UpdateWeightFromDiskReqInput",
    "get_weights_by_name": "GetWeightsByNameReqInput",
    "load_lora_adapter": "LoadLoRAAdapterReqInput",
    "unload_lora_adapter": "UnloadLoRAAdapterReqInput",
    "load_lora_adapter_from_tensors": "LoadLoRAAdapterFromTensorsReqInput",
    "update_weights_from_ipc": "UpdateWeightsFromIPCReqInput",
    "update_weight_version": "UpdateWeightVersionReqInput",
    "open_session": "OpenSessionReqInput",
    "close_session": "CloseSessionReqInput",
    "begin_weight_update": "BeginWeightUpdateReqInput",
    "end_weight_update": "EndWeightUpdateReqInput",
    "encode": "EmbeddingReqInput",
}

# the first supported release that has each feature (read from the wheels of every supported release);
# only used to name it in a refusal: whether the installed release has it is read at runtime
FIRST_RELEASE = {
    "load_lora_adapter": "0.4.9",
    "unload_lora_adapter": "0.4.9",
    "score": "0.4.7",
    "weight_version": "0.5.1",
    "update_weights_from_ipc": "0.5.4",
    "load_lora_adapter_from_tensors": "0.5.8",
    "begin_weight_update": "0.5.21",
}


@functools.lru_cache(maxsize=256)
def _fields(cls: Any) -> frozenset[str]:
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls))
    return frozenset(getattr(cls, "__struct_fields__", ()))


@functools.lru_cache(maxsize=256)
def _params(func: Any) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return frozenset()


@dataclasses.dataclass(frozen=True)
class Capability:
    support: str  # native | adapted | unsupported
    note: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"support": self.support, "note": self.note}


def _memory_tags() -> tuple[str, ...]:
    try:
        constants = importlib.import_module("sglang.srt.constants")
    except ImportError:
        return ()
    names = {"GPU_MEMORY_TYPE_WEIGHTS": "weights", "GPU_MEMORY_TYPE_KV_CACHE": "kv_cache"}
    names["GPU_MEMORY_TYPE_CUDA_GRAPH"] = "cuda_graph"
    return tuple(tag for const, tag in names.items() if hasattr(constants, const))


def _flattened_bucket() -> Any:
    try:
        return importlib.import_module("sglang.srt.weight_sync.tensor_bucket").FlattenedTensorBucket
    except (ImportError, AttributeError):
        return None


def capabilities() -> dict[str, Capability]:
    """What the installed release supports, per facade method (imports SGLang's engine module)."""
    io = importlib.import_module(IO_STRUCT)
    tm_cls = importlib.import_module("sglang.srt.managers.tokenizer_manager").TokenizerManager
    caps: dict[str, Capability] = {"generate": Capability(NATIVE), "get_server_info": Capability(NATIVE)}
    caps["update_weights_from_tensor"] = (
        Capability(ADAPTED, "sent as flattened buckets (bucket_bytes, one dtype each), pipelined")
        if _flattened_bucket() is not None
        else Capability(
            NATIVE,
            "per-tensor IPC handles in requests of at most bucket_bytes (no flattened-bucket format in this release)",
        )
    )
    dist_fields = _fields(io.UpdateWeightsFromDistributedReqInput)
    caps["update_weights_from_distributed"] = (
        Capability(NATIVE)
        if "names" in dist_fields
        else Capability(ADAPTED, "one request per tensor (this release takes a single name/dtype/shape)")
    )
    caps["init_weights_update_group"] = Capability(NATIVE)
    caps["destroy_weights_update_group"] = (
        Capability(NATIVE)
        if hasattr(io, "DestroyWeightsUpdateGroupReqInput") and hasattr(tm_cls, "destroy_weights_update_group")
        else Capability(UNSUPPORTED, "no destroy_weights_update_group before SGLang 0.5.3")
    )
    tags = _memory_tags()
    if "tags" in _fields(io.ReleaseMemoryOccupationReqInput):
        note = f"tags: {', '.join(tags)}"
        caps["release_memory_occupation"] = Capability(NATIVE, note)
        caps["resume_memory_occupation"] = Capability(NATIVE, note)
    else:
        note = "all-or-nothing: this release has no memory tags; a subset raises NotImplementedError"
        caps["release_memory_occupation"] = Capability(ADAPTED, note)
        caps["resume_memory_occupation"] = Capability(ADAPTED, note)
    caps["flush_cache"] = Capability(ADAPTED, "retried with backoff while requests are pending")
    abort_params = _params(tm_cls.abort_request)
    caps["abort"] = (
        Capability(NATIVE)
        if "abort_all" in abort_params
        else Capability(ADAPTED, "abort-all sent as one abort per pending request")
    )
    if hasattr(io, "PauseGenerationReqInput"):
        caps["pause_generation"] = Capability(NATIVE, "modes: abort, retract, in_place")
        caps["continue_generation"] = Capability(NATIVE)
    elif hasattr(tm_cls, "pause_generation"):
        caps["pause_generation"] = Capability(ADAPTED, "mode 'abort' only (no modes before 0.5.6)")
        caps["continue_generation"] = Capability(NATIVE)
    else:
        caps["pause_generation"] = Capability(UNSUPPORTED, "no pause/continue before SGLang 0.4.9")
        caps["continue_generation"] = Capability(UNSUPPORTED, "no pause/continue before SGLang 0.4.9")
    caps["shutdown"] = Capability(ADAPTED, "ends only the processes this engine started")
    caps.update(rl_capabilities(io, tm_cls))
    return caps


def since(feature: str) -> str:
    return f"needs SGLang {FIRST_RELEASE[feature]}+ (the first supported release that has it)"


def rl_capabilities(io: Any, tm_cls: Any) -> dict[str, Capability]:
    """The rows of :func:`capabilities` for the methods of :mod:`facade_rl`."""

    def has(op: str, method: str | None = None) -> bool:
        return hasattr(io, RL_REQUESTS[op]) and hasattr(tm_cls, method or op)

    caps: dict[str, Capability] = {
        "update_weights_from_disk": Capability(
            NATIVE, "an engine launched with load_format='dummy' loads the checkpoint with 'auto'"
        ),
        "get_weights_by_name": Capability(NATIVE),
        "encode": Capability(NATIVE),
        "start_profile": Capability(NATIVE),
        "stop_profile": Capability(NATIVE),
        "open_session": Capability(NATIVE),
        "close_session": Capability(NATIVE),
    }
    for op in ("load_lora_adapter", "unload_lora_adapter", "load_lora_adapter_from_tensors", "update_weights_from_ipc"):
        caps[op] = Capability(NATIVE) if has(op) else Capability(UNSUPPORTED, since(op))
    caps["verify_weights"] = (
        Capability(
            ADAPTED,
            "fingerprints computed in every scheduler by the shim's child hook, through the "
            "get_weights_by_name request",
        )
        if has("get_weights_by_name")
        else Capability(UNSUPPORTED, "this release has no get_weights_by_name request")
    )
    caps["score"] = Capability(NATIVE) if hasattr(tm_cls, "score_request") else Capability(UNSUPPORTED, since("score"))
    if not hasattr(io, "UpdateWeightVersionReqInput"):
        for op in ("get_weight_version", "update_weight_version"):
            caps[op] = Capability(UNSUPPORTED, f"no weight versions: {since('weight_version')}")
    elif hasattr(tm_cls, "_update_weight_version_if_provided"):
        caps["get_weight_version"] = caps["update_weight_version"] = Capability(NATIVE)
    else:
        note = (
            "the facade records the version after a successful update (this release's HTTP server "
            "does that itself, its tokenizer manager does not)"
        )
        caps["get_weight_version"] = caps["update_weight_version"] = Capability(ADAPTED, note)
    if has("begin_weight_update") and has("end_weight_update"):
        caps["begin_weight_update"] = caps["end_weight_update"] = Capability(NATIVE)
    else:
        note = (
            "no weight-update sessions before SGLang 0.5.21: every update is finalized as it loads, "
            "so begin/end only check that they pair"
        )
        caps["begin_weight_update"] = caps["end_weight_update"] = Capability(ADAPTED, note)
    return caps
