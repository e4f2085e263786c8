"""How ``update_weights_from_tensor`` cuts a weight set into flattened buckets.

A release with SGLang's ``FlattenedTensorBucket`` (0.5.2+) loads a bucket, one contiguous
tensor plus the names, shapes and offsets of the tensors in it, from a single IPC handle: the
scheduler opens one shared allocation per bucket instead of one per tensor. Buckets hold one
dtype on one device (the format requires it) and at most ``bucket_bytes`` bytes, except a
tensor larger than that, which gets a bucket of its own. The facade sends them in order and
builds bucket ``k + 1`` while the engine loads bucket ``k``: at most two buckets' worth of
extra memory is alive at any time, whatever the size of the weight set.

The default size was chosen by measurement on an H200 (``benchmarks/gpu_weights.py``,
``docs/performance.md``).

Nothing here imports SGLang; torch is imported by the callers' tensors already.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

DEFAULT_BUCKET_BYTES = 4 << 30
"""Default upper bound of one bucket: 4 GiB. On H200s (docs/performance.md) a 15.2 GB
7B-shaped model updated at 111 GB/s with 512 MiB buckets, 194 with 1 GiB, 262 with 2 GiB (350 on
another host), 402 with 4 GiB and 448 with 8 GiB or one bucket for all: each request costs a few
milliseconds whatever its size. 4 GiB passed 300 GB/s where 2 GiB did not, and bounds the
extra memory at two buckets (8 GiB); pass a smaller ``bucket_bytes`` where
memory is tight, a larger one where it is not."""

MIN_BUCKET_BYTES = 1 << 20


def check_bucket_bytes(bucket_bytes: Any) -> int:
    """``bucket_bytes`` as given (None: the default), refused when it is not a sane byte count."""
    if bucket_bytes is None:
        return DEFAULT_BUCKET_BYTES
    if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int):
        raise TypeError(f"bucket_bytes must be an int (bytes) or None, got {type(bucket_bytes).__name__}")
    if bucket_bytes < MIN_BUCKET_BYTES:
        raise ValueError(f"bucket_bytes must be at least {MIN_BUCKET_BYTES} (1 MiB), got {bucket_bytes}")
    return bucket_bytes


def nbytes(tensor: Any) -> int:
    return int(tensor.numel()) * int(tensor.element_size())


def plan(tensors: Sequence[tuple[str, Any]], bucket_bytes: int, by_dtype: bool = True) -> list[list[tuple[str, Any]]]:
    """Cut ``(name, tensor)`` pairs into buckets: per (dtype, device) in order of first
    appearance (``by_dtype``: what a flattened bucket needs; per-tensor requests mix them), the
    tensors in their given order, a new bucket whenever the next tensor would take the current
    one over ``bucket_bytes``. Every tensor lands in exactly one bucket."""
    groups: dict[Any, list[tuple[str, Any]]] = {}
    for name, tensor in tensors:
        groups.setdefault((tensor.dtype, tensor.device) if by_dtype else None, []).append((name, tensor))
    buckets: list[list[tuple[str, Any]]] = []
    for group in groups.values():
        current: list[tuple[str, Any]] = []
        size = 0
        for name, tensor in group:
            n = nbytes(tensor)
            if current and size + n > bucket_bytes:
                buckets.append(current)
                current, size = [], 0
            current.append((name, tensor))
            size += n
        if current:
            buckets.append(current)
    return buckets


def flatten(bucket_cls: Any, bucket: list[tuple[str, Any]]) -> dict[str, Any]:
    """The ``flattened_bucket`` payload of one bucket (one copy of its bytes into a new tensor;
    on CUDA the copy is queued on the current stream and the receiving scheduler waits for it
    through the IPC event that travels with the handle)."""
    flat = bucket_cls(named_tensors=bucket)
    return {"flattened_tensor": flat.get_flattened_tensor(), "metadata": flat.get_metadata()}


def release_ipc_memory(tensors: Sequence[tuple[str, Any]]) -> None:
    """After the engine answered: let the CUDA caching allocator reuse the blocks whose IPC
    handles the scheduler has closed (``torch.cuda.ipc_collect``). No-op without CUDA tensors."""
    if not any(getattr(t.device, "type", "") == "cuda" for _, t in tensors):
        return
    import torch

    torch.cuda.ipc_collect()
