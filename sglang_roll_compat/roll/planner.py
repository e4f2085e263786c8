"""Lay out a ROLL ``actor_infer`` SGLang role as engines: one server-args dict per engine.

Inputs (ROLL's configuration guide): ``strategy_config`` (passed through to SGLang's server
args), ``device_mapping`` (global GPU ids) and ``num_gpus_per_worker`` (GPUs per engine), plus
``num_gpus_per_node`` from the top level of ROLL's config (default 8).

* engines = ``len(device_mapping) // num_gpus_per_worker``; engine ``i`` uses
  ``device_mapping[i*n:(i+1)*n]``, which must be ascending, contiguous and on one node
  (global GPU ``g`` is GPU ``g % num_gpus_per_node`` of node ``g // num_gpus_per_node``);
* ``base_gpu_id`` is the engine's first GPU as a *local* index on its node (what SGLang needs
  when the engine's process sees the whole node; a launcher that narrows
  ``CUDA_VISIBLE_DEVICES`` to the engine's own GPUs needs 0 instead, which ``preflight`` flags);
* ``tp_size``: the GPUs of one engine are ``tp_size * pp_size * dp_size`` (``dp_size`` counts
  only without ``enable_dp_attention``) and must equal ``num_gpus_per_worker``. Without an
  explicit ``tp_size`` it is derived from that equation; an explicit ``tp_size`` (or ROLL's own
  spelling ``tensor_parallel_size``, which ROLL's strategy pops and is not a ServerArgs field)
  that disagrees with ``num_gpus_per_worker`` is a :class:`PlanError`, never a silent override;
* ``mem_fraction_static`` must be in (0, 1), default 0.7; ``load_format: dummy`` is fine
  (the trainer pushes the weights before the first generate);
* ``infer_batch_size`` is logged as ineffective (SGLang batches continuously) and never passed
  to SGLang; ``worker_name`` in ``strategy_config`` is used as the prefix of the per-engine
  worker names (default: the role, ``actor_infer-0``, ``actor_infer-1`` …);
* per-engine values (``base_gpu_id``, ``gpu_id_step`` other than 1, ``nnodes`` other than 1,
  ``node_rank`` other than 0) are refused in ``strategy_config``: the planner computes them
  and every engine lives on one node;
* every other key is checked against the installed SGLang's ``ServerArgs`` fields with a
  did-you-mean (:func:`serverargs.check_names`). When ``ServerArgs`` cannot be imported (the
  CLI on a machine without the engine stack) the plan says so in ``warnings`` and
  ``names_checked`` is False; only that check is skipped.

Ports (deterministic, never random: random offsets collide). The engines of one node are
numbered 0, 1, 2 … in ``device_mapping`` order (their *slot*); slot ``k`` owns the block
``[port_base + k*port_stride, port_base + (k+1)*port_stride)`` (defaults 30000 and 100, so eight
engines per node use 30000-30799, below Linux's default ephemeral range 32768-60999):

* ``port`` = block + 0: SGLang's base port (an offline Engine on one node binds nothing on it,
  but SGLang derives its defaults from it);
* ``nccl_port`` = block + 1: the torch.distributed rendezvous of the engine's TP group (set only
  where the installed ``ServerArgs`` has the field; 0.4.6 does not);
* dist-init port = block + 2: reserved in every plan; ``dist_init_addr = "127.0.0.1:<block+2>"``
  is set where it is needed: with ``enable_dp_attention`` (SGLang would otherwise take
  ``port + 233``, inside slot ``k+2``'s block; its ZMQ sockets use ports from block+3 up, and
  block+3 … block+10+dp_size are reserved for them) and where ``ServerArgs`` has no
  ``nccl_port`` (torch.distributed would otherwise use a random ``port + 100..1000``). It is not
  set otherwise: SGLang 0.4.10+ also reads a set ``dist_init_addr`` as "cross-node"
  (multimodal tensor transport).

Explicit ``port`` / ``nccl_port`` / ``dist_init_addr`` in ``strategy_config`` apply to every
engine, so they are honoured only where each node holds one engine (an explicit ``port`` then
moves that engine's block); with two or more engines on a node they would collide and the plan
is refused with a :class:`PlanError`.

Config shapes :func:`plan_from_config` reads (YAML needs PyYAML; JSON does not):

* ROLL's own YAML, as in ``examples/qwen3-8B-rlvr_sglang/rlvr_config_sglang.yaml`` of
  alibaba/ROLL and its SGLang guide (``docs_roll``: "SGLang Inference Backend Configuration
  Guide"): top-level ``num_gpus_per_node``; ``actor_infer.strategy_args.strategy_name: sglang``
  and ``actor_infer.strategy_args.strategy_config``; ``actor_infer.device_mapping`` and
  ``actor_infer.num_gpus_per_worker`` (siblings of ``strategy_args``, as in ROLL's
  ``roll/configs/worker_config.py``, where ``num_gpus_per_worker`` defaults to 1). The model
  comes from ``actor_infer.model_args.model_name_or_path``, else the top-level ``pretrain``.
  Whole-value OmegaConf references (``${pretrain}``) are resolved; other interpolations and
  resolvers are refused with a clear error;
* plain JSON/YAML with ``strategy_config``, ``device_mapping``, ``num_gpus_per_worker`` (and
  optionally ``num_gpus_per_node``, ``infer_batch_size``) at the top level.

``device_mapping`` is a list of ints or ROLL's string form (``list(range(0,24))``,
``list(range(0, 8, 2))``, ``[0, 1, 2]``, ``[*range(0,4), *range(8,12)]`` and ``+`` of those),
parsed with :mod:`ast` against that grammar only (never ``eval``), with bounded sizes.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import serverargs
from ..errors import PlanError, ServerArgsError

logger = logging.getLogger(__name__)

DEFAULT_NUM_GPUS_PER_NODE = 8
DEFAULT_MEM_FRACTION_STATIC = 0.7
DEFAULT_PORT_BASE = 30000
DEFAULT_PORT_STRIDE = 100
DEFAULT_ROLE = "actor_infer"

MAX_GPUS = 65536  # entries in one device_mapping
MAX_GPU_ID = 1 << 20  # magnitude of any integer in a device_mapping expression
MAX_EXPR_CHARS = 4096  # length of a device_mapping string
_SHOWN = 80  # characters of user input repeated in an error message

# block offsets inside one engine's port block
_PORT, _NCCL, _DIST_INIT = 0, 1, 2
_DP_ATTENTION_EXTRA = 8  # reserved for SGLang's ZMQ sockets: dist-init + 1 … dist-init + 8 + dp_size

# keys of strategy_config the planner consumes itself (never passed to SGLang)
_ROLL_TP_ALIAS = "tensor_parallel_size"
_PER_ENGINE_KEYS = {"base_gpu_id": None, "gpu_id_step": 1, "nnodes": 1, "node_rank": 0}
_PORT_KEYS = ("port", "nccl_port", "dist_init_addr")
_PLAIN_KEYS = ("strategy_config", "device_mapping", "num_gpus_per_worker", "num_gpus_per_node", "infer_batch_size")
_STRATEGY_ARGS_KEYS = ("strategy_name", "strategy_config")
_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}$")
_MAX_REF_DEPTH = 16


@dataclass
class EnginePlan:
    """One SGLang engine: who it is, where it runs, and the server args to start it with.

    Pass ``worker_name`` to the facade alongside ``server_args`` (it is not a ServerArgs field).
    """

    index: int
    worker_name: str
    node: int
    slot: int  # index among the engines of its node (selects the port block)
    gpu_ids: tuple[int, ...]  # global GPU ids (device_mapping entries)
    local_gpu_ids: tuple[int, ...]  # the same GPUs as indices on their node
    server_args: dict[str, Any]
    dist_init_port: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "worker_name": self.worker_name,
            "node": self.node,
            "slot": self.slot,
            "gpu_ids": list(self.gpu_ids),
            "local_gpu_ids": list(self.local_gpu_ids),
            "dist_init_port": self.dist_init_port,
            "server_args": dict(self.server_args),
        }


@dataclass
class Plan:
    """The engines of one role, plus what the user should know (``warnings``) and how each
    value was chosen (``notes``)."""

    role: str
    num_gpus_per_worker: int
    num_gpus_per_node: int
    engines: list[EnginePlan]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    names_checked: bool = False  # strategy_config keys were checked against ServerArgs
    source: str = "arguments"

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "source": self.source,
            "num_engines": len(self.engines),
            "num_gpus_per_worker": self.num_gpus_per_worker,
            "num_gpus_per_node": self.num_gpus_per_node,
            "names_checked": self.names_checked,
            "engines": [e.as_dict() for e in self.engines],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
        }


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PlanError(f"{name} must be a positive integer, got {_shown(value)}")
    return value


# -- device_mapping --------------------------------------------------------------------------
class _Budget:
    def __init__(self, text: str) -> None:
        self.text = text
        self.left = MAX_GPUS

    def take(self, count: int) -> None:
        if count > self.left:
            raise PlanError(f"device_mapping {_shown(self.text)} lists more than {MAX_GPUS} GPUs; refused")
        self.left -= count


def _refuse(text: str, node: ast.AST, why: str) -> PlanError:
    try:
        snippet = ast.unparse(node)
    except Exception:  # an AST we cannot print back: the node type says enough
        snippet = type(node).__name__
    return PlanError(
        f"device_mapping {_shown(text)}: {why} ({_shown(snippet)}); accepted forms: a list of integers, "
        "list(range(a, b[, step])), [*range(a, b), *range(c, d)] and '+' of those"
    )


def _int_literal(text: str, node: ast.AST) -> int:
    negative = False
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        negative, node = True, node.operand
    if not (isinstance(node, ast.Constant) and type(node.value) is int):
        raise _refuse(text, node, "only integer literals are allowed here")
    value: int = node.value
    if value > MAX_GPU_ID:
        raise _refuse(text, node, f"integer larger than {MAX_GPU_ID}")
    return -value if negative else value


def _range_call(text: str, node: ast.AST, budget: _Budget) -> list[int] | None:
    """The ids of ``range(...)`` with literal arguments, or None when ``node`` is no range call."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range"):
        return None
    if node.keywords or not 1 <= len(node.args) <= 3 or any(isinstance(a, ast.Starred) for a in node.args):
        raise _refuse(text, node, "range() takes 1 to 3 integer literals")
    args = [_int_literal(text, a) for a in node.args]
    if len(args) == 3 and args[2] == 0:
        raise _refuse(text, node, "range() step must not be zero")
    ids = range(*args)
    budget.take(len(ids))
    return list(ids)


def _list_display(text: str, node: ast.List, budget: _Budget) -> list[int]:
    out: list[int] = []
    for elt in node.elts:
        if isinstance(elt, ast.Starred):
            ids = _range_call(text, elt.value, budget)
            if ids is None:
                raise _refuse(text, elt, "only *range(...) may be unpacked in a list")
            out.extend(ids)
        else:
            budget.take(1)
            out.append(_int_literal(text, elt))
    return out


def _operand(text: str, node: ast.AST, budget: _Budget) -> list[int]:
    if isinstance(node, ast.List):
        return _list_display(text, node, budget)
    ids = _range_call(text, node, budget)
    if ids is not None:
        return ids
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "list":
        if node.keywords or len(node.args) != 1:
            raise _refuse(text, node, "list() takes exactly one range(...) or list")
        (arg,) = node.args
        if isinstance(arg, ast.List):
            return _list_display(text, arg, budget)
        ids = _range_call(text, arg, budget)
        if ids is None:
            raise _refuse(text, arg, "list() accepts only range(...) or a list of integers")
        return ids
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else type(node.func).__name__
        raise _refuse(text, node, f"call to {name!r} is not allowed")
    raise _refuse(text, node, f"{type(node).__name__} is not allowed")


def _parse_expression(text: str) -> list[int]:
    if len(text) > MAX_EXPR_CHARS:
        raise PlanError(f"device_mapping string is {len(text)} characters long (limit {MAX_EXPR_CHARS}); refused")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise PlanError(f"device_mapping {_shown(text)} is not a valid expression: {exc}") from None
    budget = _Budget(text)
    out: list[int] = []
    stack: list[ast.AST] = [tree.body]
    while stack:  # '+' chains are flattened iteratively: no recursion on hostile depth
        node = stack.pop()
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            stack.extend((node.right, node.left))
            continue
        if isinstance(node, ast.BinOp):
            raise _refuse(text, node, f"operator {type(node.op).__name__} is not allowed (only '+')")
        out.extend(_operand(text, node, budget))
    return out


def parse_device_mapping(value: object) -> list[int]:
    """The global GPU ids of a ``device_mapping``: a list of ints or ROLL's string form.

    Raises :class:`PlanError` for anything else: other expressions (names, attributes, calls
    other than ``list``/``range``, lambdas…), non-integer, negative or duplicate ids, an empty
    mapping, or more than ``MAX_GPUS`` ids.
    """
    if isinstance(value, str):
        ids: Sequence[object] = _parse_expression(value)
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_GPUS:
            raise PlanError(f"device_mapping lists {len(value)} GPUs (limit {MAX_GPUS}); refused")
        ids = value
    elif value is None:
        raise PlanError("device_mapping is missing: an SGLang engine needs GPUs (ROLL would run the role on CPU)")
    else:
        raise PlanError(
            f"device_mapping must be a list of GPU ids or a string like 'list(range(0,8))', got {_shown(value)}"
        )
    result: list[int] = []
    bad: list[object] = []
    for v in ids:
        if isinstance(v, bool) or not isinstance(v, int):
            bad.append(v)
        else:
            result.append(v)
    if bad:
        raise PlanError(f"device_mapping must hold integer GPU ids; not integers: {_shown(bad[:8])}")
    negative = [v for v in result if v < 0]
    if negative:
        raise PlanError(f"device_mapping holds negative GPU ids: {_shown(negative[:8])}")
    if not result:
        raise PlanError("device_mapping is empty: no engine to plan")
    counts: dict[int, int] = {}
    for v in result:
        counts[v] = counts.get(v, 0) + 1
    duplicates = sorted(v for v, c in counts.items() if c > 1)
    if duplicates:
        raise PlanError(f"device_mapping lists GPU ids more than once: {_shown(duplicates[:16])}")
    return result


# -- ServerArgs field names --------------------------------------------------------------------
def _known_fields(known: frozenset[str] | None, plan: Plan) -> frozenset[str] | None:
    if known is not None:
        plan.names_checked = True
        return known
    try:
        fields = serverargs.field_names()
    except Exception as exc:  # no engine stack here (CLI machine), or a broken one: say so
        message = (
            f"SGLang's ServerArgs could not be imported ({type(exc).__name__}: {exc}); strategy_config keys "
            "were NOT checked against it (run the plan where the engine's SGLang is installed)"
        )
        logger.warning("%s", message)
        plan.warnings.append(message)
        return None
    plan.names_checked = True
    return fields


# -- ports ------------------------------------------------------------------------------------
def _port_of_addr(addr: object) -> int:
    if not isinstance(addr, str) or ":" not in addr:
        raise PlanError(f"dist_init_addr must be 'host:port', got {_shown(addr)}")
    port_text = addr.rsplit(":", 1)[1]
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise PlanError(f"dist_init_addr {_shown(addr)} has no valid TCP port")
    return int(port_text)


def _engine_ports(cfg: Mapping[str, Any], block: int, dp_span: int, engine: str) -> tuple[int, int, int]:
    """port, nccl_port and dist-init port of one engine; PlanError when any two would meet."""
    port: int = cfg.get("port", block + _PORT)
    nccl: int = cfg.get("nccl_port", block + _NCCL)
    dist = _port_of_addr(cfg["dist_init_addr"]) if "dist_init_addr" in cfg else block + _DIST_INIT
    used: dict[str, int] = {"port": port, "nccl_port": nccl, "dist-init port": dist}
    for j in range(1, dp_span + 1):
        used[f"dp-attention socket {j}"] = dist + j
    owners: dict[int, str] = {}
    for name, value in used.items():
        if value > 65535:
            raise PlanError(f"{engine}: {name} would be {value}, beyond 65535; lower port_base")
        if value in owners:
            raise PlanError(f"{engine}: {name} and {owners[value]} would both use port {value}")
        owners[value] = name
    return port, nccl, dist


# -- the planner ------------------------------------------------------------------------------
def plan_engines(
    strategy_config: Mapping[str, Any] | None,
    device_mapping: object,
    num_gpus_per_worker: object = 1,
    *,
    num_gpus_per_node: object = DEFAULT_NUM_GPUS_PER_NODE,
    role: str = DEFAULT_ROLE,
    port_base: int = DEFAULT_PORT_BASE,
    port_stride: int = DEFAULT_PORT_STRIDE,
    known_fields: frozenset[str] | None = None,
    source: str = "arguments",
) -> Plan:
    """One server-args dict per engine (see the module docstring for every rule).

    ``known_fields``: the ServerArgs field names to check ``strategy_config`` against (default:
    the installed SGLang's). Raises :class:`PlanError` with a clear message for bad input.
    """
    n = _positive_int(num_gpus_per_worker, "num_gpus_per_worker")
    per_node = _positive_int(num_gpus_per_node, "num_gpus_per_node")
    if not isinstance(role, str) or not role:
        raise PlanError(f"role must be a non-empty string, got {_shown(role)}")
    if isinstance(port_base, bool) or not isinstance(port_base, int) or not 1024 <= port_base <= 65535:
        raise PlanError(f"port_base must be an integer in 1024-65535, got {_shown(port_base)}")
    if isinstance(port_stride, bool) or not isinstance(port_stride, int) or port_stride < _DIST_INIT + 1:
        raise PlanError(f"port_stride must be an integer >= {_DIST_INIT + 1}, got {_shown(port_stride)}")
    if strategy_config is None:
        strategy_config = {}
    if not isinstance(strategy_config, Mapping):
        raise PlanError(f"strategy_config must be a mapping, got {_shown(strategy_config)}")
    bad_keys = [k for k in strategy_config if not isinstance(k, str)]
    if bad_keys:
        raise PlanError(f"strategy_config keys must be strings, got {_shown(bad_keys)}")

    plan = Plan(role=role, num_gpus_per_worker=n, num_gpus_per_node=per_node, engines=[], source=source)
    ids = parse_device_mapping(device_mapping)
    if len(ids) % n:
        raise PlanError(
            f"len(device_mapping)={len(ids)} is not divisible by num_gpus_per_worker={n}: "
            f"{len(ids) % n} GPU(s) would belong to no engine"
        )
    if n > per_node:
        raise PlanError(
            f"num_gpus_per_worker={n} is more than num_gpus_per_node={per_node}: an engine would straddle nodes"
        )

    cfg = dict(strategy_config)
    prefix = role
    if "worker_name" in cfg:
        prefix = cfg.pop("worker_name")
        if not isinstance(prefix, str) or not prefix:
            raise PlanError(f"worker_name in strategy_config must be a non-empty string, got {_shown(prefix)}")
        plan.notes.append(f"worker_name {prefix!r} from strategy_config is the prefix of the engines' worker names")
    if "infer_batch_size" in cfg:
        value = cfg.pop("infer_batch_size")
        _warn(
            plan,
            f"strategy_config.infer_batch_size={_shown(value)} is ineffective (SGLang batches continuously); "
            "it is not passed to SGLang",
        )
    roll_tp = cfg.pop(_ROLL_TP_ALIAS, None)

    known = _known_fields(known_fields, plan)
    if known is not None:
        try:
            serverargs.check_names(cfg, known)
        except ServerArgsError as exc:
            raise PlanError(f"strategy_config: {exc}") from exc

    for key, allowed in _PER_ENGINE_KEYS.items():
        if key in cfg and (allowed is None or cfg[key] != allowed):
            raise PlanError(
                f"strategy_config sets {key}={_shown(cfg[key])}, but the planner computes it per engine from "
                "device_mapping (every engine lives on one node); remove it"
            )
        cfg.pop(key, None)

    tp = _tp_size(cfg, roll_tp, n, plan)
    cfg["tp_size"] = tp
    if cfg.get("mem_fraction_static") is None:
        cfg["mem_fraction_static"] = DEFAULT_MEM_FRACTION_STATIC
        plan.notes.append(f"mem_fraction_static not set: default {DEFAULT_MEM_FRACTION_STATIC}")
    if cfg.get("load_format") == "dummy":
        plan.notes.append("load_format=dummy: random weights at start; the trainer must push weights before generating")

    dp_attention = bool(cfg.get("enable_dp_attention", False))
    dp_size = cfg.get("dp_size", 1) or 1
    has_nccl_field = known is None or "nccl_port" in known
    if known is None:
        plan.notes.append("nccl_port is planned although this SGLang's ServerArgs is unknown (0.4.6 has no such field)")
    set_dist_init = dp_attention or not has_nccl_field or "dist_init_addr" in cfg
    dp_span = _DP_ATTENTION_EXTRA + int(dp_size) if dp_attention else 0
    if _DIST_INIT + 1 + dp_span > port_stride:
        raise PlanError(
            f"port_stride={port_stride} is too small: with enable_dp_attention and dp_size={dp_size} an engine "
            f"needs {_DIST_INIT + 1 + dp_span} ports"
        )

    layout = _layout(ids, n, per_node)
    _check_explicit_ports(cfg, layout, port_base, port_stride)

    for i, (gpus, node, local, slot) in enumerate(layout):
        name = f"{prefix}-{i}"
        block = cfg["port"] if "port" in cfg else port_base + slot * port_stride
        port, nccl, dist = _engine_ports(cfg, block, dp_span, f"engine {i} ({name})")
        args = dict(cfg)
        args["base_gpu_id"] = local[0]
        args["port"] = port
        if has_nccl_field:
            args["nccl_port"] = nccl
        if set_dist_init and "dist_init_addr" not in cfg:
            args["dist_init_addr"] = f"127.0.0.1:{dist}"
        try:
            serverargs.check_values(args)
        except ServerArgsError as exc:
            raise PlanError(f"strategy_config: {exc}") from exc
        plan.engines.append(EnginePlan(i, name, node, slot, gpus, local, args, dist))

    plan.notes.append(
        f"ports: engine slot k on a node uses port {port_base}+{port_stride}*k, nccl_port +1, dist-init +2"
        + (" (dist_init_addr set)" if set_dist_init else " (reserved; dist_init_addr left unset)")
    )
    return plan


_Placement = tuple[tuple[int, ...], int, tuple[int, ...], int]  # gpus, node, local ids, slot on the node


def _layout(ids: Sequence[int], n: int, per_node: int) -> list[_Placement]:
    """Split ``ids`` into engines of ``n`` GPUs, each contiguous and ascending on one node."""
    engines_per_node: dict[int, int] = {}
    layout: list[_Placement] = []
    for i in range(len(ids) // n):
        gpus = tuple(ids[i * n : (i + 1) * n])
        nodes = sorted({g // per_node for g in gpus})
        if len(nodes) > 1:
            raise PlanError(
                f"engine {i} (GPUs {list(gpus)}) straddles nodes {nodes} with num_gpus_per_node={per_node}; "
                "each engine's GPUs must lie on one node"
            )
        local = tuple(g % per_node for g in gpus)
        if any(local[j] != local[0] + j for j in range(len(local))):
            raise PlanError(
                f"engine {i} GPUs {list(gpus)} are not contiguous and ascending on node {nodes[0]} "
                f"(local indices {list(local)}); SGLang takes base_gpu_id and the next tp_size GPUs"
            )
        slot = engines_per_node.get(nodes[0], 0)
        engines_per_node[nodes[0]] = slot + 1
        layout.append((gpus, nodes[0], local, slot))
    return layout


def _check_explicit_ports(cfg: Mapping[str, Any], layout: Sequence[_Placement], port_base: int, stride: int) -> None:
    """Explicit port values apply to every engine: fine with one engine per node, else refused."""
    for key in ("port", "nccl_port"):
        value = cfg.get(key)
        if key in cfg and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536):
            raise PlanError(f"{key} must be a TCP port (1-65535), got {_shown(value)}")
    explicit = [k for k in _PORT_KEYS if k in cfg]
    crowded = sorted({node for _g, node, _l, slot in layout if slot > 0})
    if explicit and crowded:
        count = sum(1 for _g, node, _l, _s in layout if node == crowded[0])
        raise PlanError(
            f"strategy_config sets {', '.join(explicit)} for every engine, but node {crowded[0]} holds {count} "
            f"engines: they would collide. Remove {', '.join(explicit)} (the planner assigns ports from "
            f"port_base={port_base}, stride {stride} per engine on a node) or choose another port_base"
        )


def _warn(plan: Plan, message: str) -> None:
    logger.warning("%s", message)
    plan.warnings.append(message)


def _tp_size(cfg: Mapping[str, Any], roll_tp: object, n: int, plan: Plan) -> int:
    pp = _positive_int(cfg.get("pp_size", 1), "pp_size")
    dp = _positive_int(cfg.get("dp_size", 1), "dp_size")
    dp_factor = 1 if cfg.get("enable_dp_attention", False) else dp
    explicit = cfg.get("tp_size")
    if roll_tp is not None:
        roll_tp = _positive_int(roll_tp, _ROLL_TP_ALIAS)
        if explicit is not None and explicit != roll_tp:
            raise PlanError(f"strategy_config sets tp_size={_shown(explicit)} and {_ROLL_TP_ALIAS}={roll_tp}; keep one")
        explicit = roll_tp
        plan.notes.append(f"{_ROLL_TP_ALIAS}={roll_tp} (ROLL's spelling) is passed to SGLang as tp_size")
    if explicit is None:
        if n % (pp * dp_factor):
            raise PlanError(
                f"num_gpus_per_worker={n} is not divisible by pp_size*dp_size={pp * dp_factor}: no tp_size fits"
            )
        tp = n // (pp * dp_factor)
        plan.notes.append(f"tp_size={tp} from num_gpus_per_worker={n}")
        return tp
    tp = _positive_int(explicit, "tp_size")
    if tp * pp * dp_factor != n:
        detail = (
            f"tp_size={tp}" + (f" * pp_size={pp}" if pp > 1 else "") + (f" * dp_size={dp}" if dp_factor > 1 else "")
        )
        raise PlanError(
            f"{detail} = {tp * pp * dp_factor} GPUs per engine, but num_gpus_per_worker={n}; "
            "make them agree (ROLL gives each engine num_gpus_per_worker GPUs)"
        )
    return tp


# -- config files -----------------------------------------------------------------------------
def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or YAML config file (YAML with PyYAML's safe loader, imported lazily)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read config {str(p)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise PlanError(f"config {str(p)!r} is not UTF-8 text: {exc}") from exc
    data: object
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"config {str(p)!r} is not valid JSON: {exc}") from exc
    else:
        try:
            import yaml
        except ImportError:
            raise PlanError(
                f"reading the YAML config {str(p)!r} needs PyYAML: pip install pyyaml (or give a .json file)"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"config {str(p)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise PlanError(f"config {str(p)!r} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def _deref(value: object, root: Mapping[str, Any], where: str, depth: int = 0) -> object:
    """Resolve a whole-value OmegaConf reference ``${a.b}`` against the config's top level."""
    if isinstance(value, Mapping):
        return {k: _deref(v, root, f"{where}.{k}", depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_deref(v, root, f"{where}[{i}]", depth) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    match = _REF.match(value)
    if match is None:
        raise PlanError(
            f"{where}={_shown(value)}: only whole-value references like ${{pretrain}} are resolved; "
            "write the value itself"
        )
    if depth >= _MAX_REF_DEPTH:
        raise PlanError(f"{where}: references nest deeper than {_MAX_REF_DEPTH} (a cycle?)")
    node: object = root
    for part in match.group(1).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise PlanError(f"{where}={value}: {match.group(1)!r} is not in the config")
        node = node[part]
    return _deref(node, root, where, depth + 1)


def _roll_section(data: Mapping[str, Any], role: str) -> dict[str, Any]:
    section = data[role]
    if not isinstance(section, Mapping):
        raise PlanError(f"{role} must be a mapping, got {_shown(section)}")
    strategy_args = section.get("strategy_args")
    if not isinstance(strategy_args, Mapping):
        raise PlanError(f"{role}.strategy_args is missing or not a mapping: set strategy_name: sglang there")
    if "num_gpus_per_worker" in strategy_args:
        raise PlanError(
            f"num_gpus_per_worker belongs under {role}, not under {role}.strategy_args (ROLL ignores it there)"
        )
    unknown = [k for k in strategy_args if k not in _STRATEGY_ARGS_KEYS]
    if unknown:
        details = "; ".join(f"{k!r}{serverargs.suggest(str(k), _STRATEGY_ARGS_KEYS)}" for k in unknown)
        raise PlanError(f"{role}.strategy_args has unknown key(s): {details} (it holds strategy_name, strategy_config)")
    name = strategy_args.get("strategy_name")
    if name != "sglang":
        raise PlanError(f"{role}.strategy_args.strategy_name is {_shown(name)}, not 'sglang': nothing to plan")
    return {
        "strategy_config": strategy_args.get("strategy_config"),
        "device_mapping": section.get("device_mapping"),
        "num_gpus_per_worker": section.get("num_gpus_per_worker"),
        "infer_batch_size": section.get("infer_batch_size"),
        "model_args": section.get("model_args"),
    }


def plan_from_config(
    obj: Mapping[str, Any] | str | os.PathLike[str],
    *,
    num_gpus_per_node: int | None = None,
    role: str = DEFAULT_ROLE,
    port_base: int = DEFAULT_PORT_BASE,
    port_stride: int = DEFAULT_PORT_STRIDE,
    known_fields: frozenset[str] | None = None,
) -> Plan:
    """Plan from ROLL's YAML (the ``role`` section, default ``actor_infer``) or a plain config.

    ``obj`` is a path to a ``.json``/``.yaml`` file or an already loaded mapping. An explicit
    ``num_gpus_per_node`` overrides the config's top-level value (default 8).
    """
    if isinstance(obj, (str, os.PathLike)):
        source = os.fspath(obj)
        data: Mapping[str, Any] = load_config(obj)
    elif isinstance(obj, Mapping):
        source, data = "mapping", obj
    else:
        raise PlanError(f"expected a config path or mapping, got {type(obj).__name__}")
    notes: list[str] = []
    warnings: list[str] = []
    if role in data:
        shape = "roll"
        fields: dict[str, Any] = _roll_section(data, role)
    elif any(k in data for k in ("strategy_config", "device_mapping")):
        shape = "plain"
        unknown = [k for k in data if k not in _PLAIN_KEYS]
        if unknown:
            details = "; ".join(f"{k!r}{serverargs.suggest(str(k), _PLAIN_KEYS)}" for k in unknown)
            raise PlanError(
                f"unknown top-level key(s) in the plain config: {details} (allowed: {', '.join(_PLAIN_KEYS)})"
            )
        fields = {k: data.get(k) for k in _PLAIN_KEYS}
    else:
        raise PlanError(
            f"config has neither a {role!r} section (ROLL's YAML) nor strategy_config/device_mapping "
            "at the top level (plain form)"
        )

    def where(key: str) -> str:
        return f"{role}.{key}" if shape == "roll" else key

    strategy_config = _deref(
        fields["strategy_config"],
        data,
        where("strategy_args.strategy_config" if shape == "roll" else "strategy_config"),
    )
    if strategy_config is not None and not isinstance(strategy_config, Mapping):
        raise PlanError(f"strategy_config must be a mapping, got {_shown(strategy_config)}")
    device_mapping = _deref(fields["device_mapping"], data, where("device_mapping"))
    gpus_per_worker = _deref(fields["num_gpus_per_worker"], data, where("num_gpus_per_worker"))
    if gpus_per_worker is None:
        gpus_per_worker = 1
        notes.append("num_gpus_per_worker not set: ROLL's default 1")
    if num_gpus_per_node is not None:
        per_node: object = num_gpus_per_node
        notes.append(f"num_gpus_per_node={num_gpus_per_node} given by the caller")
    elif data.get("num_gpus_per_node") is not None:
        per_node = _deref(data["num_gpus_per_node"], data, "num_gpus_per_node")
    else:
        per_node = DEFAULT_NUM_GPUS_PER_NODE
        notes.append(f"num_gpus_per_node not set: default {DEFAULT_NUM_GPUS_PER_NODE}")
    if fields.get("infer_batch_size") is not None:
        message = (
            f"{where('infer_batch_size')}={_shown(fields['infer_batch_size'])} is ineffective with SGLang "
            "(continuous batching); it is not passed to SGLang"
        )
        logger.warning("%s", message)
        warnings.append(message)

    cfg = dict(strategy_config or {})
    if shape == "roll" and "model_path" not in cfg:
        model = _model_path(fields.get("model_args"), data, role)
        if model is not None:
            cfg["model_path"], origin = model
            notes.append(f"model_path from {origin}")
        else:
            notes.append(f"model_path not found ({role}.model_args.model_name_or_path, pretrain): add it at launch")

    plan = plan_engines(
        cfg,
        device_mapping,
        gpus_per_worker,
        num_gpus_per_node=per_node,
        role=role,
        port_base=port_base,
        port_stride=port_stride,
        known_fields=known_fields,
        source=f"{source} ({shape})",
    )
    plan.warnings[:0] = warnings
    plan.notes[:0] = notes
    return plan


def _model_path(model_args: object, data: Mapping[str, Any], role: str) -> tuple[str, str] | None:
    if isinstance(model_args, Mapping):
        value = _deref(model_args.get("model_name_or_path"), data, f"{role}.model_args.model_name_or_path")
        if isinstance(value, str) and value:
            return value, f"{role}.model_args.model_name_or_path"
    value = _deref(data.get("pretrain"), data, "pretrain")
    if isinstance(value, str) and value:
        return value, "pretrain"
    return None


def render(plan: Plan) -> str:
    """The plan as a table, for the CLI."""
    lines = [
        f"plan for {plan.role} ({plan.source}): {len(plan.engines)} engine(s), "
        f"{plan.num_gpus_per_worker} GPU(s) each, {plan.num_gpus_per_node} GPUs per node"
    ]
    header = ("engine", "worker_name", "node", "gpus", "base_gpu_id", "tp", "port", "nccl_port", "dist_init")
    rows = [header]
    for e in plan.engines:
        a = e.server_args
        rows.append(
            (
                str(e.index),
                e.worker_name,
                str(e.node),
                ",".join(map(str, e.gpu_ids)),
                str(a["base_gpu_id"]),
                str(a["tp_size"]),
                str(a["port"]),
                str(a.get("nccl_port", "-")),
                str(a.get("dist_init_addr", f"({e.dist_init_port})")),
            )
        )
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    per_engine = {"base_gpu_id", "port", "nccl_port", "dist_init_addr"}
    common = {k: v for k, v in (plan.engines[0].server_args.items() if plan.engines else ()) if k not in per_engine}
    lines.append("common server args: " + ", ".join(f"{k}={v!r}" for k, v in sorted(common.items())))
    lines.append(f"strategy_config keys checked against ServerArgs: {'yes' if plan.names_checked else 'NO'}")
    lines += [f"WARNING: {w}" for w in plan.warnings]
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
