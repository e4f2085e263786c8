"""The scheduler side of ``verify_weights``: fingerprints of the weights where they live.

``child_entry`` (:mod:`childhooks`) arms this module in every scheduler child it starts: a
post-import hook wraps ``Scheduler.get_weights_by_name`` (an upstream request on every supported
release). A request whose ``name`` starts with :data:`PREFIX` is ours: the rest of the name is a
JSON payload, and the scheduler answers it itself instead of upstream's truncated read-out; every
other request goes to upstream untouched.

Payload ops (all answers are JSON-able, so they travel over ZMQ and over HTTP alike):

* ``describe``: every parameter of the model this rank holds (local shape, dtype) and, for fused
  parameters, the local row count of each fused part (``qkv_proj``: q, k, v; merged layers:
  their ``output_sizes`` / tp);
* ``fingerprint``: for each segment ``[param, dim, start, [length per rank]]`` the
  :func:`fingerprint` (shape, dtype, two 64-bit checksums of the raw bytes) of
  ``param.narrow(dim, start, length)`` on this rank (``dim`` -1: the whole parameter);
* ``fetch``: the same segments' raw bytes (base64, with shape and dtype; only asked for
  mismatched names).

All tensor-parallel ranks get the request (control requests are broadcast to them); each answers
for its own shard and the answers are gathered onto rank 0 over the TP CPU group, whose answer is
the one that reaches the tokenizer manager: ``{"sglang_roll_compat": 1, "ranks": [...]}`` as JSON,
packed into the list of floats upstream's output type allows (:func:`encode`).

The module imports nothing heavy at import time (a spawned child imports it while unpickling).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

logger = logging.getLogger(__name__)

PREFIX = "__sglang_roll_compat_weights__:"
PROTOCOL = 1
# where upstream's dispatcher finds get_weights_by_name: the Scheduler (its mixin) up to 0.5.x,
# the weight-update component of the scheduler in newer releases (0.5.23: both modules exist,
# only the component's method is dispatched)
TARGETS = (
    ("sglang.srt.managers.scheduler", "Scheduler"),
    ("sglang.srt.managers.scheduler_components.weight_updater", "SchedulerWeightUpdaterManager"),
)
IO_STRUCT = "sglang.srt.managers.io_struct"
WORD_MASK = (1 << 64) - 1

_armed = False
_patched: list[Any] = []  # the Scheduler classes wrapped in this process


# -- fingerprints (the same function on both sides) ---------------------------------------------
ROW = 4096  # words per row of the position-sensitive checksum
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def _weights(n: int, salt: int) -> Any:
    """``n`` odd, well-mixed 64-bit weights for positions ``0..n-1`` (splitmix64-style, numpy
    uint64: the arithmetic wraps mod 2**64)."""
    import numpy as np

    with np.errstate(over="ignore"):
        z = np.arange(n, dtype=np.uint64) * np.uint64(_MIX[0]) + np.uint64(salt)
        z = (z ^ (z >> np.uint64(31))) * np.uint64(_MIX[1])
        z = (z ^ (z >> np.uint64(29))) * np.uint64(_MIX[2])
    return z | np.uint64(1)


def _raw_bytes(tensor: Any) -> Any:
    """The tensor's bytes (C order) as a flat uint8 tensor on its own device; no copy when it is
    contiguous already."""
    import torch

    flat = tensor.detach().reshape(-1).contiguous()
    try:
        return flat.view(torch.uint8)
    except RuntimeError:  # a view at an offset the byte view cannot take
        return flat.clone().view(torch.uint8)


def _words(raw: Any) -> tuple[Any, int]:
    """The bytes as little-endian int64 words, and the 0-7 bytes left over as one integer (read
    to the host only when there are any: a device tensor costs no sync here otherwise)."""
    import torch

    whole = raw.numel() // 8 * 8
    head = raw[:whole]
    try:
        words = head.view(torch.int64)
    except RuntimeError:  # not 8-byte aligned in its storage
        words = head.clone().view(torch.int64)
    if whole == raw.numel():
        return words, 0
    tail = int.from_bytes(bytes(raw[whole:].cpu().numpy().tobytes()), "little")
    return words, tail


class _Host:
    """The reductions on the CPU: numpy (no thread-pool wake-ups: a small tensor costs
    microseconds, not the milliseconds a loaded machine's OpenMP pool takes)."""

    def __init__(self, words: Any) -> None:
        import numpy as np

        self.np = np
        self.words = words.numpy().view(np.uint64)

    def zero(self) -> Any:
        return 0

    def sum(self, a: Any, axis: int | None = None) -> Any:
        return a.sum(axis=axis, dtype=self.np.uint64)

    def rows(self, full: int) -> Any:
        return self.words[:full].reshape(-1, ROW)

    def dot(self, a: Any, n: int, salt: int) -> int:
        with self.np.errstate(over="ignore"):
            return int((a * _weights(n, salt)).sum(dtype=self.np.uint64))

    def rest(self, full: int) -> Any:
        return self.words[full:]

    def scalar(self, a: Any) -> int:
        return int(a)


@functools.lru_cache(maxsize=256)
def _device_weights(n: int, salt: int, device: Any) -> Any:
    """:func:`_weights` as an int64 tensor on ``device``, kept: the same few sizes recur for every
    tensor of a model (one host-to-device copy each, not one per tensor)."""
    import numpy as np
    import torch

    return torch.from_numpy(_weights(n, salt).view(np.int64)).to(device)


class _Device:
    """The same reductions with torch on the tensor's device (int64 wraps like uint64). Results
    stay 0-d device tensors: nothing waits for the device until :func:`fingerprints` reads them
    all at once."""

    def __init__(self, words: Any) -> None:
        import torch

        self.torch, self.words = torch, words

    def zero(self) -> Any:
        return self.torch.zeros((), dtype=self.torch.int64, device=self.words.device)

    def sum(self, a: Any, axis: int | None = None) -> Any:
        return a.sum() if axis is None else a.sum(axis)

    def rows(self, full: int) -> Any:
        return self.words[:full].view(-1, ROW)

    def dot(self, a: Any, n: int, salt: int) -> Any:
        return (a * _device_weights(n, salt, a.device)).sum()

    def rest(self, full: int) -> Any:
        return self.words[full:]

    def scalar(self, a: Any) -> Any:
        return a


def _partial_sums(raw: Any, ops_class: type[_Host] | type[_Device] | None = None) -> tuple[Any, Any, int]:
    """The two checksums before the tail is added: ints on the host, 0-d int64 tensors on a
    device (see :func:`checksums`), and the tail."""
    words, tail = _words(raw)
    if ops_class is None:
        ops_class = _Host if words.device.type == "cpu" else _Device
    ops = ops_class(words)
    n = words.numel()
    full = n // ROW * ROW
    plain = ops.zero()
    weighted = ops.zero()
    if full:
        rows = ops.rows(full)
        row_sums = ops.sum(rows, 1)
        plain = plain + ops.scalar(ops.sum(row_sums))
        weighted = weighted + ops.dot(row_sums, full // ROW, 1)
        weighted = weighted + ops.dot(ops.sum(rows, 0), ROW, 2)
    if n > full:
        rest = ops.rest(full)
        plain = plain + ops.scalar(ops.sum(rest))
        weighted = weighted + ops.dot(rest, n - full, 3)
    return plain, weighted, tail


def _finish(plain: int, weighted: int, tail: int) -> tuple[int, int]:
    return (plain + tail) & WORD_MASK, (weighted + tail * _MIX[0]) & WORD_MASK


def checksums(raw: Any, ops_class: type[_Host] | type[_Device] | None = None) -> tuple[int, int]:
    """Two checksums of a flat uint8 tensor, mod 2**64: the sum of its little-endian 64-bit
    words, and a position-sensitive sum: the words laid out in rows of :data:`ROW`, each row's
    sum and each column's sum times its own odd weight (a word that moved to another row or
    column changes it). Memory-speed reductions where the tensor lives (numpy on the CPU, torch
    on an accelerator: integer sums, so both give the same numbers)."""
    plain, weighted, tail = _partial_sums(raw, ops_class)
    return _finish(int(plain), int(weighted), tail)


def _described(shape: list[int], dtype: str, sums: tuple[int, int]) -> dict[str, Any]:
    return {
        "shape": shape,
        "dtype": dtype,
        "word_sum": f"{sums[0]:016x}",  # hex: JSON encoders differ on integers past 2**63
        "weighted_sum": f"{sums[1]:016x}",
    }


def fingerprint(tensor: Any) -> dict[str, Any]:
    """Shape, dtype and two checksums of the raw bytes (C order) of ``tensor`` (see
    :func:`checksums`). Equal tensors give equal fingerprints; a changed or moved word changes
    them. They are made to catch accidental differences at memory speed where the tensor lives
    (no copy to the host), not to stand against a tensor crafted to collide."""
    described = fingerprints([tensor])[0]
    assert described is not None
    return described


def fingerprints(
    tensors: Iterable[Any], ops_class: type[_Host] | type[_Device] | None = None
) -> list[dict[str, Any] | None]:
    """:func:`fingerprint` of each tensor (None stays None), with one device-to-host read for all
    the tensors on each accelerator instead of several per tensor. A tensor is not kept once
    its reductions are queued: pass a generator, and a cast or contiguous copy made for one
    tensor is freed before the next is made. ``ops_class`` forces one implementation (tests)."""
    import torch

    out: list[dict[str, Any] | None] = []
    queued: dict[Any, list[tuple[int, list[int], str, Any, Any, int]]] = {}  # per device
    for i, tensor in enumerate(tensors):
        out.append(None)
        if tensor is None:
            continue
        shape, dtype = list(tensor.shape), str(tensor.dtype).removeprefix("torch.")
        plain, weighted, tail = _partial_sums(_raw_bytes(tensor), ops_class)
        if isinstance(plain, int):
            out[i] = _described(shape, dtype, _finish(plain, int(weighted), tail))
        else:
            queued.setdefault(plain.device, []).append((i, shape, dtype, plain, weighted, tail))
    for rows in queued.values():
        values = torch.stack([torch.stack([row[3], row[4]]) for row in rows]).tolist()  # the one sync
        for (i, shape, dtype, _, _, tail), (plain, weighted) in zip(rows, values, strict=True):
            out[i] = _described(shape, dtype, _finish(plain, weighted, tail))
    return out


def pack(tensor: Any) -> dict[str, Any]:
    """A tensor as JSON-able raw bytes (base64), shape and dtype: what ``fetch`` answers."""
    raw = _raw_bytes(tensor).cpu()
    return {
        "shape": list(tensor.shape),
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "data": base64.b64encode(raw.numpy().tobytes()).decode("ascii"),
    }


def unpack(packed: Mapping[str, Any]) -> Any:
    """The tensor :func:`pack` packed (on the CPU)."""
    import torch

    data = bytearray(base64.b64decode(packed["data"]))
    flat = torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    return flat.view(getattr(torch, packed["dtype"])).reshape(packed["shape"])


def request_name(payload: Mapping[str, Any]) -> str:
    return PREFIX + json.dumps(payload, separators=(",", ":"))


# -- answering one rank's share ------------------------------------------------------------------
def _segment(params: Mapping[str, Any], segment: Any, rank: int) -> Any:
    name, dim, start, lengths = segment
    param = params.get(name)
    if param is None:
        return None
    length = lengths[rank] if rank < len(lengths) else 0
    if dim < 0:
        return param
    if length <= 0 or start + length > param.shape[dim]:
        return None
    return param.narrow(dim, start, length)


def _fused_rows(module: Any, tp_size: int) -> list[int] | None:
    """The local row count of each fused part of a fused linear layer, from its attributes."""
    heads, kv_heads, head_size = (getattr(module, a, None) for a in ("num_heads", "num_kv_heads", "head_size"))
    if all(isinstance(v, int) for v in (heads, kv_heads, head_size)):
        return [heads * head_size, kv_heads * head_size, kv_heads * head_size]  # type: ignore[operator]
    sizes = getattr(module, "output_sizes", None)
    if isinstance(sizes, (list, tuple)) and sizes and all(isinstance(s, int) for s in sizes):
        return [s // tp_size for s in sizes]
    return None


def answer_rank(
    params: Mapping[str, Any], modules: Mapping[str, Any], payload: Mapping[str, Any], rank: int, tp_size: int
) -> dict[str, Any]:
    """This rank's answer to one payload (pure: tests call it on plain ``nn.Module`` objects)."""
    op = payload.get("op")
    if op == "describe":
        shapes = {n: [list(p.shape), str(p.dtype).removeprefix("torch.")] for n, p in params.items()}
        fused: dict[str, list[int]] = {}
        for name in params:
            owner = modules.get(name.rsplit(".", 1)[0])
            rows = _fused_rows(owner, tp_size) if owner is not None else None
            if rows is not None and len(rows) > 1:
                fused[name] = rows
        return {"rank": rank, "params": shapes, "fused": fused}
    if op in ("fingerprint", "fetch"):
        parts = [_segment(params, seg, rank) for seg in payload["segments"]]
        if op == "fingerprint":
            return {"rank": rank, "fingerprints": fingerprints(parts)}
        return {"rank": rank, "values": [None if part is None else pack(part) for part in parts]}
    raise ValueError(f"unknown verify_weights op {op!r}")


def answer(
    params: Mapping[str, Any],
    modules: Mapping[str, Any],
    name: str,
    rank: int,
    tp_size: int,
    gather: Callable[[Any], list[Any]] | None = None,
) -> list[float]:
    """The answer to a reserved request ``name``: every rank's share (``gather`` collects them
    across the TP group; every rank must call it), packed as upstream's parameter type (:func:`encode`)."""
    payload = json.loads(name[len(PREFIX) :])
    try:
        mine: dict[str, Any] = answer_rank(params, modules, payload, rank, tp_size)
    except Exception as exc:  # answered, not raised: an exception would end the scheduler
        logger.exception("verify_weights: rank %d could not answer %s", rank, payload.get("op"))
        mine = {"rank": rank, "error": f"{type(exc).__name__}: {exc}"}
    ranks = gather(mine) if gather is not None and tp_size > 1 else [mine]
    return encode({"sglang_roll_compat": PROTOCOL, "ranks": list(ranks)})


# -- the answer as upstream's parameter type ------------------------------------------------------
# Upstream types GetWeightsByNameReqOutput.parameter as a list of floats (or of float lists), and
# 0.5.20+ checks that when it decodes the scheduler's msgpack: the JSON answer travels as floats,
# six bytes per float (exact: integers below 2**53), after a marker and the byte count.
MARKER = -1.6180339887498949e300
_BYTES_PER_FLOAT = 6


def encode(answer: Mapping[str, Any]) -> list[float]:
    data = json.dumps(answer, separators=(",", ":")).encode()
    data += b"\0" * (-len(data) % _BYTES_PER_FLOAT)
    words = [
        float(int.from_bytes(data[i : i + _BYTES_PER_FLOAT], "big")) for i in range(0, len(data), _BYTES_PER_FLOAT)
    ]
    return [MARKER, float(len(data)), *words]


def decode(parameter: Any) -> dict[str, Any] | None:
    """The answer :func:`encode` packed; None when ``parameter`` is not one (upstream's own)."""
    if not (isinstance(parameter, list) and len(parameter) >= 2 and parameter[0] == MARKER):
        return None
    try:
        data = b"".join(int(f).to_bytes(_BYTES_PER_FLOAT, "big") for f in parameter[2:])
        answer = json.loads(data[: int(parameter[1])].rstrip(b"\0"))
    except (ValueError, TypeError, OverflowError):
        return None
    return answer if isinstance(answer, dict) else None


# -- inside a real scheduler ---------------------------------------------------------------------
def _model_of(scheduler: Any) -> Any:
    worker = scheduler.tp_worker
    for path in (("model_runner",), ("worker", "model_runner"), ("_worker", "model_runner")):
        obj = worker
        for attr in path:
            obj = getattr(obj, attr, None)
        if obj is not None and getattr(obj, "model", None) is not None:
            return obj.model
    raise RuntimeError("verify_weights: cannot find the model runner of this scheduler's TP worker")


def _gather(scheduler: Any, tp_size: int) -> Callable[[Any], list[Any]]:
    def gather(mine: Any) -> list[Any]:
        import torch.distributed as dist

        group = getattr(scheduler, "tp_cpu_group", None)
        out: list[Any] = [None] * tp_size
        dist.all_gather_object(out, mine, group=group)
        return out

    return gather


def _tp_rank_size(owner: Any) -> tuple[int, int]:
    rank, size = getattr(owner, "tp_rank", None), getattr(owner, "tp_size", None)
    if isinstance(rank, int) and isinstance(size, int):
        return rank, size
    import torch.distributed as dist

    group = getattr(owner, "tp_cpu_group", None)
    return int(dist.get_rank(group=group)), int(dist.get_world_size(group=group))


def scheduler_answer(scheduler: Any, name: str) -> list[float]:
    """``scheduler``: the object upstream's dispatcher calls (the Scheduler, or the weight-update
    component of newer releases); it has the TP worker and the TP CPU group."""
    model = _model_of(scheduler)
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    rank, tp_size = _tp_rank_size(scheduler)
    return answer(params, modules, name, rank, tp_size, _gather(scheduler, tp_size))


def _output(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any], parameter: Any) -> Any:
    import importlib

    cls = getattr(importlib.import_module(IO_STRUCT), "GetWeightsByNameReqOutput", None)
    if cls is not None:
        try:
            return cls(parameter=parameter)
        except TypeError:
            pass
    out = wrapped(*args, **kwargs)  # upstream builds its own output (it finds no such parameter)
    out.parameter = parameter
    return out


def _get_weights_by_name(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    req = args[0] if args else kwargs.get("recv_req")
    name = getattr(req, "name", None)
    if not (isinstance(name, str) and name.startswith(PREFIX)):
        return wrapped(*args, **kwargs)
    return _output(wrapped, instance, args, kwargs, scheduler_answer(instance, name))


def _patch(module: Any, class_name: str) -> None:
    import wrapt

    cls = getattr(module, class_name, None)
    if cls is None or "get_weights_by_name" not in dir(cls) or cls in _patched:
        return
    wrapt.wrap_function_wrapper(cls, "get_weights_by_name", _get_weights_by_name)
    _patched.append(cls)


def arm() -> None:
    """Wrap ``Scheduler.get_weights_by_name`` once SGLang's scheduler module is imported (runs in
    a scheduler child; the module is usually imported already: the hook then fires at once)."""
    global _armed
    if _armed:
        return
    _armed = True
    import wrapt

    for module_name, class_name in TARGETS:
        wrapt.register_post_import_hook(functools.partial(_patch, class_name=class_name), module_name)
