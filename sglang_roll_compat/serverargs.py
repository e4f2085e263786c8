"""Server arguments checked against the installed SGLang's ``ServerArgs`` before anything launches."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from .errors import ServerArgsError

# Arguments the facade consumes itself; never forwarded to SGLang.
FACADE_ONLY = frozenset({"worker_name"})


@lru_cache(maxsize=1)
def field_names() -> frozenset[str]:
    """Every field of the installed ``ServerArgs`` (a dataclass up to 0.5.19, a msgspec Struct after)."""
    server_args = importlib.import_module("sglang.srt.server_args").ServerArgs
    if dataclasses.is_dataclass(server_args):
        return frozenset(f.name for f in dataclasses.fields(server_args))
    struct_fields = getattr(server_args, "__struct_fields__", None)
    if struct_fields is not None:
        return frozenset(struct_fields)
    raise ServerArgsError(f"cannot list the fields of {server_args!r}")


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_names(args: Mapping[str, Any], known: frozenset[str] | None = None) -> None:
    """Raise :class:`ServerArgsError` naming every unknown argument, with a did-you-mean."""
    known = field_names() if known is None else known
    unknown = [name for name in args if name not in known]
    if unknown:
        details = "; ".join(f"{name!r}{suggest(name, known)}" for name in sorted(unknown))
        raise ServerArgsError(f"unknown SGLang server argument(s) for this SGLang release: {details}")


def check_values(args: Mapping[str, Any]) -> None:
    """The value checks every release agrees on (SGLang itself checks the rest at construction)."""
    problems = []
    fraction = args.get("mem_fraction_static")
    if fraction is not None and (
        isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1
    ):
        problems.append(f"mem_fraction_static must be a number in (0, 1), got {fraction!r}")
    for name in ("tp_size", "dp_size", "pp_size", "ep_size", "nnodes"):
        value = args.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(f"{name} must be a positive integer, got {value!r}")
    for name in ("base_gpu_id", "node_rank"):
        value = args.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append(f"{name} must be a non-negative integer, got {value!r}")
    for name in ("port", "nccl_port"):
        value = args.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
            problems.append(f"{name} must be a TCP port (1-65535), got {value!r}")
    model_path = args.get("model_path")
    if model_path is not None and (not isinstance(model_path, str) or not model_path):
        problems.append(f"model_path must be a non-empty string, got {model_path!r}")
    if problems:
        raise ServerArgsError("invalid server arguments: " + "; ".join(problems))


def check(args: Mapping[str, Any], known: frozenset[str] | None = None) -> None:
    if args.get("model_path") is None:
        raise ServerArgsError("model_path is required")
    check_names(args, known)
    check_values(args)
