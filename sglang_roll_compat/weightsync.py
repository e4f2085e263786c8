"""The client side of ``verify_weights``: Hugging Face names onto the engine's parameters, the
slice of each tensor every tensor-parallel rank holds, and the report.

**Names.** SGLang's Qwen2/Llama-style models fuse projections: ``q_proj``, ``k_proj``, ``v_proj``
become the parts 0, 1, 2 of ``qkv_proj``; ``gate_proj``, ``up_proj`` the parts 0, 1 of
``gate_up_proj`` (the order their ``load_weights`` stacks them in). Every other name is the
engine's own. A tied ``lm_head.weight`` (the engine has no such parameter) is checked against
``model.embed_tokens.weight``.

**Tensor-parallel slices** (:func:`shards`), computed from the Hugging Face shape, the local shape
each rank reports (``describe``) and, for fused parameters, the local row count of each part:

* a fused part of ``L`` local rows of a tensor of ``T`` rows: rank ``r`` holds rows
  ``[r*L, (r+1)*L)`` when ``L*tp == T``; when ``L*tp > T`` (more ranks than KV heads: the heads
  are replicated) ``replicas = L*tp // T`` ranks share one slice and rank ``r`` holds
  ``[(r // replicas)*L, ...)``; inside the local parameter the part starts after the earlier parts;
* same shape on the rank as in the checkpoint: replicated (norms, biases of row-parallel layers);
* dim 0 smaller on the rank (column-parallel, vocab-parallel embeddings and ``lm_head``): rank
  ``r`` holds rows ``[r*L0, min((r+1)*L0, T))`` in its first rows (the rest is vocab padding);
* dim 1 smaller (row-parallel: ``o_proj``, ``down_proj``): columns ``[r*L1, (r+1)*L1)``.

This module imports torch only inside functions.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from typing import Any

from .weightprobe import fingerprint, unpack

# Hugging Face projection -> (engine's fused parameter, part index)
FUSED_PARTS: dict[str, tuple[str, int]] = {
    "q_proj": ("qkv_proj", 0),
    "k_proj": ("qkv_proj", 1),
    "v_proj": ("qkv_proj", 2),
    "gate_proj": ("gate_up_proj", 0),
    "up_proj": ("gate_up_proj", 1),
}
_UNFUSED: dict[str, list[str]] = {}
for _hf, (_fused, _part) in FUSED_PARTS.items():
    _UNFUSED.setdefault(_fused, []).append(_hf)
TIED = ("lm_head.weight", "model.embed_tokens.weight")


@dataclasses.dataclass(frozen=True)
class Shard:
    """What one TP rank holds of one Hugging Face tensor: ``length`` entries along ``dim`` from
    ``hf_start`` of the tensor, stored from ``local_start`` of the rank's parameter (``dim`` -1:
    the whole tensor, replicated; ``length`` 0: nothing on this rank)."""

    rank: int
    dim: int
    hf_start: int
    local_start: int
    length: int


@dataclasses.dataclass(frozen=True)
class Mismatch:
    name: str
    max_abs_diff: float | None  # None when the shapes differ (nothing to subtract)
    reason: str


@dataclasses.dataclass(frozen=True)
class UnknownName:
    name: str
    suggestions: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class WeightReport:
    """What ``verify_weights`` found.

    * ``matched``: given names whose tensor the engine holds exactly (every rank's slice, every
      data-parallel replica: bytes equal after casting to the engine's dtype);
    * ``mismatched``: given names the engine holds differently, with the largest absolute
      difference (the engine's tensor is fetched for these names only) or why not comparable;
    * ``unknown``: given names the engine's model has no parameter for, with close matches;
    * ``missing``: parameters the engine's model holds (in Hugging Face names) that were not
      given: not verified, not wrong;
    * ``ok``: nothing mismatched and nothing unknown (``complete``: ``ok`` and nothing missing).
    """

    matched: tuple[str, ...]
    mismatched: tuple[Mismatch, ...]
    missing: tuple[str, ...]
    unknown: tuple[UnknownName, ...]
    ok: bool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ok", not self.mismatched and not self.unknown)

    @property
    def complete(self) -> bool:
        return self.ok and not self.missing

    def __str__(self) -> str:
        lines = [
            f"verify_weights: {'ok' if self.ok else 'FAILED'}: {len(self.matched)} matched, "
            f"{len(self.mismatched)} mismatched, {len(self.unknown)} unknown, {len(self.missing)} not given"
        ]
        for m in self.mismatched:
            diff = "" if m.max_abs_diff is None else f" (max abs diff {m.max_abs_diff:g})"
            lines.append(f"  mismatched {m.name}{diff}: {m.reason}")
        for u in self.unknown:
            hint = f"; did you mean {', '.join(u.suggestions)}?" if u.suggestions else ""
            lines.append(f"  unknown {u.name}{hint}")
        return "\n".join(lines)


# -- names ---------------------------------------------------------------------------------------
def engine_name(hf_name: str) -> tuple[str, int | None]:
    """The engine parameter holding ``hf_name`` and the fused part it is (None: not fused)."""
    parts = hf_name.split(".")
    for i, part in enumerate(parts):
        if part in FUSED_PARTS:
            fused, index = FUSED_PARTS[part]
            return ".".join([*parts[:i], fused, *parts[i + 1 :]]), index
    return hf_name, None


def hf_names(engine_params: Sequence[str], fused: Mapping[str, Sequence[int]]) -> list[str]:
    """The Hugging Face names of the engine's parameters (fused ones expanded into their parts)."""
    out: list[str] = []
    for name in engine_params:
        parts = name.split(".")
        expanded = False
        for i, part in enumerate(parts):
            if part in _UNFUSED and name in fused:
                out.extend(".".join([*parts[:i], hf, *parts[i + 1 :]]) for hf in _UNFUSED[part])
                expanded = True
                break
        if not expanded:
            out.append(name)
    return out


def suggestions(name: str, known: Sequence[str]) -> tuple[str, ...]:
    return tuple(difflib.get_close_matches(name, known, n=3, cutoff=0.6))


# -- tensor-parallel slices ------------------------------------------------------------------------
def shards(
    hf_shape: Sequence[int],
    local_shapes: Sequence[Sequence[int]],
    part: int | None = None,
    part_rows: Sequence[int] | None = None,
) -> list[Shard]:
    """Per rank, the slice of a tensor of ``hf_shape`` it holds (see the module docstring);
    ``local_shapes[r]``: rank ``r``'s parameter shape; ``part``/``part_rows``: the fused part and
    the local rows of every part. Raises ValueError when the shapes admit no such slicing."""
    tp = len(local_shapes)
    hf = list(hf_shape)
    out = []
    for rank, shape in enumerate(local_shapes):
        local = list(shape)
        if part is not None:
            if part_rows is None or part >= len(part_rows):
                raise ValueError(f"no row count for fused part {part}")
            rows = int(part_rows[part])
            total = hf[0] if hf else 0
            if not hf or hf[1:] != local[1:] or rows <= 0:
                raise ValueError(f"shape {hf} does not fit fused part {part} of local shape {local}")
            if rows * tp == total:
                start = rank * rows
            elif rows * tp > total and total % rows == 0 and (rows * tp) % total == 0:
                start = (rank // (rows * tp // total)) * rows
            else:
                raise ValueError(f"{total} rows do not split into {tp} ranks of {rows}")
            out.append(Shard(rank, 0, start, sum(int(r) for r in part_rows[:part]), rows))
            continue
        if local == hf:
            out.append(Shard(rank, -1, 0, 0, hf[0] if hf else 0))
            continue
        if len(local) != len(hf) or not hf:
            raise ValueError(f"checkpoint shape {hf} vs engine shape {local}")
        differ = [d for d in range(len(hf)) if hf[d] != local[d]]
        if len(differ) != 1:
            raise ValueError(f"checkpoint shape {hf} vs engine shape {local}")
        dim = differ[0]
        size = local[dim]
        if dim == 0 and size * tp >= hf[0]:
            start = rank * size
            out.append(Shard(rank, 0, min(start, hf[0]), 0, max(0, min(size, hf[0] - start))))
        elif dim == 1 and size * tp == hf[1]:
            out.append(Shard(rank, 1, rank * size, 0, size))
        else:
            raise ValueError(f"checkpoint shape {hf} vs engine shape {local} with tp={tp}")
    return out


def hf_slice(tensor: Any, shard: Shard) -> Any:
    """The part of the checkpoint ``tensor`` that ``shard`` describes."""
    if shard.dim < 0:
        return tensor
    return tensor.narrow(shard.dim, shard.hf_start, shard.length)


def expected_slice(tensor: Any, shard: Shard, dtype: str) -> Any:
    """What the rank must hold for ``shard`` of ``tensor``: the slice cast to the engine's dtype
    (as loading casts it)."""
    import torch

    return hf_slice(tensor, shard).to(getattr(torch, dtype))


def expected_fingerprint(tensor: Any, shard: Shard, dtype: str) -> dict[str, Any]:
    """The fingerprint the rank must report for ``shard`` of ``tensor``."""
    return fingerprint(expected_slice(tensor, shard, dtype))


def segment(engine_param: str, rank_shards: Sequence[Shard]) -> list[Any]:
    """The request segment for one tensor: ``[param, dim, local_start, [length per rank]]``."""
    first = rank_shards[0]
    if any(s.dim != first.dim or s.local_start != first.local_start for s in rank_shards):
        raise ValueError(f"{engine_param}: the ranks' slices differ in layout")
    return [engine_param, first.dim, first.local_start, [s.length for s in rank_shards]]


def max_abs_diff(tensor: Any, rank_shards: Sequence[Shard], values: Sequence[Any], dtype: str) -> float | None:
    """The largest absolute difference between ``tensor`` (cast to the engine's ``dtype``) and
    what the ranks hold (``values``: each rank's slice as :func:`weightprobe.pack` packed it,
    None where it holds nothing); None when they are not comparable."""
    import torch

    worst = 0.0
    for shard, value in zip(rank_shards, values, strict=True):
        if value is None:
            if shard.length:
                return None
            continue
        got = unpack(value).to(torch.float64)
        want = hf_slice(tensor, shard).to(getattr(torch, dtype)).to(torch.float64).cpu()
        if got.shape != want.shape:
            return None
        if got.numel():
            worst = max(worst, float((got - want).abs().max()))
    return worst


__all__ = [
    "FUSED_PARTS",
    "Mismatch",
    "Shard",
    "UnknownName",
    "WeightReport",
    "engine_name",
    "expected_fingerprint",
    "expected_slice",
    "hf_names",
    "shards",
]
