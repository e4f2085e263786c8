"""The env policy: one pure function from (server args, environ, worker) to a list of changes.

Precedence, for every variable below:

1. A server argument that *requires* a value wins (``enable_symm_mem`` needs
   ``NCCL_CUMEM_ENABLE=1``; ``enable_nccl_nvls`` needs ``NCCL_NVLS_ENABLE=1``). If that
   overrides a value the user set, the change is logged at WARNING, never silently.
2. Otherwise a valid value the user set before launch wins, even where upstream's
   ``_set_envs_and_config`` overwrote it (we put it back, and say so).
3. Otherwise our default applies (usually upstream's own default).
A value that is set but invalid (empty, non-numeric, out of range) is reported and replaced by
the default. On SGLang 0.4.6 the NCCL variables keep upstream's values (that release has no
``enable_symm_mem``), reported as such.

Each change has a scope: ``process`` changes are applied to the owner's ``os.environ`` (they
must match between the trainer and the engine, or upstream reads them in the parent) and to
every child; ``children`` changes only reach SGLang's child processes, so the trainer's own
allocator settings and caches are left alone and two engines launched from two threads of one
process cannot see each other's per-worker directories.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import workspace

logger = logging.getLogger(__name__)

PROCESS = "process"
CHILDREN = "children"


@dataclass(frozen=True)
class EnvFacts:
    """What one SGLang family does with the environment (family data)."""

    symm_mem_args: bool = True  # ServerArgs has enable_symm_mem / NCCL_CUMEM_ENABLE follows it
    nccl_nvls_arg: bool = True  # ServerArgs has enable_nccl_nvls
    trtllm_pdl: bool = True  # upstream sets TRTLLM_ENABLE_PDL (0.5.x)
    cuda_device_max_connections: str = "8"  # upstream's forced value
    triton_cache_manager: bool = False  # 0.4.6 sets TRITON_CACHE_MANAGER when tp*dp > 1
    # SGLang may turn NCCL_CUMEM_ENABLE on by itself, without enable_symm_mem (0.5.17+: multi-node
    # on an MNNVL fabric; 0.5.19+: moe_a2a_backend=deepep_v2; 0.5.23: KV-shard symmetric gather):
    # a "1" it set during the launch while the user had set nothing is kept, not reset to "0"
    upstream_cumem: bool = False
    # ServerArgs fields hold the raw input and resolution lives in declarations, read through
    # upstream's resolving_view (0.5.19+); the policy reads server args the same way
    resolved_view: bool = False
    # importing sglang setdefaults FLASHINFER_WORKSPACE_BASE, TRITON_CACHE_DIR (and
    # TORCHINDUCTOR_CACHE_DIR, CUDA_CACHE_PATH) under $SGLANG_CACHE_DIR in the caller (0.5.18+,
    # sglang.srt.environ.redirect_third_party_caches): such a value is SGLang's, not the user's
    sglang_cache_defaults: bool = False
    # names upstream's _set_envs_and_config sets on every release of the family, and those only
    # some releases of it set (release -> names); read from the wheels, used by the extras below
    upstream_sets: frozenset[str] = frozenset()
    upstream_sets_by_release: tuple[tuple[str, frozenset[str]], ...] = ()

    def sets_upstream(self, name: str, release: str | None) -> bool:
        """True when this family's upstream ``_set_envs_and_config`` sets ``name`` itself."""
        if name in self.upstream_sets:
            return True
        return any(release == r and name in names for r, names in self.upstream_sets_by_release)


@dataclass(frozen=True)
class ExtraVar:
    """A variable a framework profile adds to the policy (``roll`` sets TF_CPP_MIN_LOG_LEVEL…):
    set to ``value`` only where neither the user nor upstream sets it."""

    name: str
    value: str
    reason: str
    upstream: bool = False  # the family data says upstream's _set_envs_and_config sets it


@dataclass(frozen=True)
class Worker:
    """Who the engine is: its name (optional) and the physical GPUs it uses on this node."""

    name: str | None
    gpu_ids: tuple[str, ...] = ()

    @property
    def slot(self) -> str:
        return workspace.worker_slot(self.name, self.gpu_ids)


@dataclass(frozen=True)
class EnvChange:
    name: str
    old: str | None  # value before the change (None: unset)
    new: str | None  # value after (None: removed)
    action: str  # "set" | "remove" | "keep"
    reason: str
    scope: str = PROCESS
    warn: bool = False  # a value the user set is overridden, removed, or not restored

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "old": self.old,
            "new": self.new,
            "action": self.action,
            "reason": self.reason,
            "scope": self.scope,
            "warn": self.warn,
        }


# Every variable the policy may touch; a test asserts the shim touches no other.
MANAGED_NAMES = (
    "PYTORCH_CUDA_ALLOC_CONF",
    "PYTORCH_ALLOC_CONF",
    "NCCL_CUMEM_ENABLE",
    "NCCL_NVLS_ENABLE",
    "CUDA_DEVICE_MAX_CONNECTIONS",
    "CUDA_MODULE_LOADING",
    "TRTLLM_ENABLE_PDL",
    "SGLANG_BLOCK_NONZERO_RANK_CHILDREN",
    "FLASHINFER_WORKSPACE_BASE",
    "TRITON_CACHE_DIR",
)
# Touched only while a framework profile is armed (``sglang_roll_compat.roll``).
PROFILE_NAMES = (
    "TF_CPP_MIN_LOG_LEVEL",
    "CUTE_DSL_LOG_LEVEL",
    "CUTE_DSL_LOG_TO_CONSOLE",
    "TORCH_NCCL_AVOID_RECORD_STREAMS",
)


def arg(server_args: Any, name: str, default: Any = None) -> Any:
    """A server argument from a ``ServerArgs`` object or a plain mapping."""
    if isinstance(server_args, Mapping):
        return server_args.get(name, default)
    return getattr(server_args, name, default)


def resolved(server_args: Any, facts: EnvFacts | None = None) -> Any:
    """``server_args`` as upstream's ``_set_envs_and_config`` reads it: through SGLang's own
    ``resolving_view`` where the family says so (0.5.19+), else as it is (a mapping stays one)."""
    if facts is None or not facts.resolved_view or isinstance(server_args, Mapping):
        return server_args
    import importlib

    view = importlib.import_module("sglang.srt.arg_groups.model_override_base").resolving_view
    return view(server_args)


_CACHE_NAMES = ("FLASHINFER_WORKSPACE_BASE", "TRITON_CACHE_DIR")


def _without_sglang_cache_defaults(user: Mapping[str, str]) -> Mapping[str, str]:
    """``user`` minus the cache directories that importing SGLang set itself (0.5.18+): equal to
    upstream's ``third_party_cache_defaults()``, they are not a choice the user made."""
    import importlib

    try:
        defaults = importlib.import_module("sglang.srt.environ").third_party_cache_defaults()
    except (ImportError, AttributeError):  # not this SGLang: nothing to tell apart
        return user
    if not any(name in user and user[name] == defaults.get(name) for name in _CACHE_NAMES):
        return user
    return {k: v for k, v in user.items() if not (k in _CACHE_NAMES and v == defaults.get(k))}


def worker_from_args(
    server_args: Any, name: str | None, environ: Mapping[str, str], facts: EnvFacts | None = None
) -> Worker:
    server_args = resolved(server_args, facts)
    tp = int(arg(server_args, "tp_size", 1) or 1)
    pp = int(arg(server_args, "pp_size", 1) or 1)
    dp = int(arg(server_args, "dp_size", 1) or 1)
    nnodes = int(arg(server_args, "nnodes", 1) or 1)
    per_node = tp * pp * (dp if dp > 1 and not arg(server_args, "enable_dp_attention", False) else 1)
    count = max(per_node // max(nnodes, 1), 1)
    ids = workspace.physical_gpu_ids(
        int(arg(server_args, "base_gpu_id", 0) or 0),
        count,
        int(arg(server_args, "gpu_id_step", 1) or 1),
        environ,
    )
    return Worker(name, tuple(ids))


def _valid_flag(value: str | None) -> bool:
    return value in ("0", "1")


def _valid_positive_int(value: str | None) -> bool:
    if value is None or not value.isascii() or not value.isdigit():
        return False
    digits = value.lstrip("0")  # int() refuses strings over 4300 digits: never call it on one
    return 0 < len(digits) <= 4 and int(digits) <= 1024


def _valid_module_loading(value: str | None) -> bool:
    return value in ("LAZY", "EAGER", "AUTO")


def _valid_path(value: str | None) -> bool:
    return bool(value) and value is not None and value.startswith("/") and "\x00" not in value


class _Planner:
    def __init__(self, environ: Mapping[str, str], user_env: Mapping[str, str]) -> None:
        self.environ = environ
        self.user = user_env
        self.changes: list[EnvChange] = []

    def decide(
        self,
        name: str,
        default: str,
        reason: str,
        valid: Any,
        scope: str = PROCESS,
        required: str | None = None,
        required_reason: str = "",
    ) -> None:
        current = self.environ.get(name)
        user = self.user.get(name)
        if required is not None:
            new, why, warn = required, required_reason, user is not None and user != required
        elif user is not None and valid(user):
            new, why, warn = user, f"your value is kept ({reason})", False
            if current != user:
                why = f"your value is restored after SGLang overwrote it with {current!r} ({reason})"
        elif user is not None:
            new, why, warn = default, f"your value {user!r} is not valid here; using {default!r} ({reason})", True
        else:
            new, why, warn = default, reason, False
        action = "keep" if current == new else "set"
        self.changes.append(EnvChange(name, current, new, action, why, scope, warn))

    def extra(self, var: ExtraVar) -> None:
        current = self.environ.get(var.name)
        user = self.user.get(var.name)
        if user:
            new, why = user, f"your value is kept ({var.reason})"
            if current != user:
                why = f"your value is restored after SGLang overwrote it with {current!r} ({var.reason})"
        elif var.upstream or (current is not None and user is None):
            new = current if current is not None else var.value
            why = f"SGLang sets it itself on this release; left as SGLang's ({var.reason})"
        else:
            new, why = var.value, var.reason
        action = "keep" if current == new else "set"
        self.changes.append(EnvChange(var.name, current, new, action, why, PROCESS, False))

    def remove(self, name: str, reason: str, scope: str) -> None:
        current = self.environ.get(name)
        if current is not None:
            self.changes.append(EnvChange(name, current, None, "remove", reason, scope, True))


def plan(
    server_args: Any,
    environ: Mapping[str, str],
    worker: Worker,
    *,
    user_env: Mapping[str, str] | None = None,
    facts: EnvFacts | None = None,
    cache_environ: Mapping[str, str] | None = None,
    extras: Sequence[ExtraVar] = (),
) -> list[EnvChange]:
    """The ordered env changes for one engine launch.

    ``environ`` is the environment as it is now (after upstream's ``_set_envs_and_config`` when
    called from the launch path); ``user_env`` what the user had set before the launch (defaults
    to ``environ``). ``extras`` come from a framework profile (``sglang_roll_compat.roll``).
    Pure: reads nothing else, writes nothing, creates no directory.
    """
    facts = facts or EnvFacts()
    server_args = resolved(server_args, facts)
    user = environ if user_env is None else user_env
    if facts.sglang_cache_defaults:
        user = _without_sglang_cache_defaults(user)
    p = _Planner(environ, user)
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        p.remove(
            name,
            "removed for SGLang's children: expandable segments break the memory saver's "
            "release/resume (the trainer keeps its value)",
            CHILDREN,
        )

    symm = bool(arg(server_args, "enable_symm_mem", False))
    nvls = bool(arg(server_args, "enable_nccl_nvls", False))
    if facts.symm_mem_args:
        upstream_on = (
            facts.upstream_cumem
            and not symm
            and user.get("NCCL_CUMEM_ENABLE") is None
            and environ.get("NCCL_CUMEM_ENABLE") == "1"
        )
        p.decide(
            "NCCL_CUMEM_ENABLE",
            "0",
            "follows enable_symm_mem; the trainer's NCCL must use the same value (trainer_env())",
            _valid_flag,
            required="1" if symm or upstream_on else None,
            required_reason="enable_symm_mem=True needs NCCL's cuMem allocator"
            if symm
            else "SGLang turned it on for this launch (MNNVL multi-node, DeepEP v2 or KV-shard gather "
            "need NCCL's cuMem allocator); the trainer's NCCL must use the same value",
        )
    else:
        _keep_upstream(p, "NCCL_CUMEM_ENABLE", "0", "this SGLang forces it; it has no enable_symm_mem")
    if facts.nccl_nvls_arg:
        p.decide(
            "NCCL_NVLS_ENABLE",
            "0",
            "NVLink SHARP off unless enable_nccl_nvls or enable_symm_mem asks for it",
            _valid_flag,
            required="1" if (nvls or (symm and facts.symm_mem_args)) else None,
            required_reason="enable_nccl_nvls/enable_symm_mem=True needs NVLS",
        )
    else:
        _keep_upstream(p, "NCCL_NVLS_ENABLE", str(int(nvls)), "this SGLang forces it from enable_nccl_nvls")
    p.decide(
        "CUDA_DEVICE_MAX_CONNECTIONS",
        facts.cuda_device_max_connections,
        "SGLang's value; a colocated Megatron trainer may need its own (set it before launch)",
        _valid_positive_int,
    )
    p.decide("CUDA_MODULE_LOADING", "AUTO", "load CUDA modules as SGLang expects", _valid_module_loading)
    if facts.trtllm_pdl:
        p.decide("TRTLLM_ENABLE_PDL", "1", "FlashInfer/TRT-LLM kernels use PDL (set 0 to disable)", _valid_flag)
    p.decide(
        "SGLANG_BLOCK_NONZERO_RANK_CHILDREN",
        "0",
        "an in-process Engine on node_rank >= 1 must return instead of blocking",
        _valid_flag,
    )
    for var in extras:
        p.extra(var)
    dirs = workspace.worker_dirs(worker.slot, cache_environ)
    p.decide(
        "FLASHINFER_WORKSPACE_BASE",
        str(dirs["flashinfer"]),
        f"private FlashInfer workspace of worker slot {worker.slot!r}",
        _valid_path,
        scope=CHILDREN,
    )
    p.decide(
        "TRITON_CACHE_DIR",
        str(dirs["triton"]),
        f"stable Triton cache of worker slot {worker.slot!r} (warm across runs, never shared)",
        _valid_path,
        scope=CHILDREN,
    )
    return p.changes


def _keep_upstream(p: _Planner, name: str, upstream_value: str, reason: str) -> None:
    current = p.environ.get(name)
    user = p.user.get(name)
    warn = user is not None and user != upstream_value
    why = reason + (f"; your value {user!r} cannot be honoured on this release" if warn else "")
    action = "keep" if current == upstream_value else "set"
    p.changes.append(EnvChange(name, current, upstream_value, action, why, PROCESS, warn))


def process_changes(changes: Sequence[EnvChange]) -> list[EnvChange]:
    return [c for c in changes if c.scope == PROCESS and c.action != "keep"]


def child_environment(changes: Sequence[EnvChange]) -> tuple[tuple[str, str | None], ...]:
    """The (name, value-or-None) pairs every SGLang child applies at start: every final value,
    so a child is right even when another engine's launch changed the parent's environ since."""
    return tuple((c.name, c.new) for c in changes)


def apply_to_process(changes: Sequence[EnvChange], environ: Any) -> None:
    """Apply the process-scope changes to ``environ`` (``os.environ``) and log every change."""
    for change in changes:
        level = logging.WARNING if change.warn else logging.INFO
        if change.action != "keep" or change.warn:
            logger.log(
                level, "env %s: %r -> %r [%s] %s", change.name, change.old, change.new, change.scope, change.reason
            )
        if change.scope != PROCESS or change.action == "keep":
            continue
        if change.new is None:
            environ.pop(change.name, None)
        else:
            environ[change.name] = change.new


def trainer_env(
    server_args: Any, environ: Mapping[str, str] | None = None, facts: EnvFacts | None = None
) -> dict[str, str]:
    """What the trainer's process must share with the engine for NCCL weight sync.

    Use it as a Ray ``runtime_env={"env_vars": trainer_env(args)}`` or ``os.environ.update``.
    Above all ``NCCL_CUMEM_ENABLE``: peers whose values differ hang or fail with
    ``invalid argument`` in the weight-update group. ``facts`` defaults to those of the installed
    release's family (0.4.6 forces its own NCCL values, for one).
    """
    import os

    if facts is None:
        facts, _ = selected_facts()
    env = dict(os.environ if environ is None else environ)
    changes = plan(server_args, env, Worker(None), facts=facts)
    out = {}
    for change in changes:
        if change.name in ("NCCL_CUMEM_ENABLE", "NCCL_NVLS_ENABLE") and change.new is not None:
            out[change.name] = change.new
    return out


def selected_facts() -> tuple[EnvFacts, str | None]:
    """The env facts of the family this copy of the package selected, and None; or the default
    facts and why no family is selected (the version gate refused the installed SGLang)."""
    import importlib

    package = importlib.import_module(".", __package__)  # this copy (a vendored copy too)
    family = getattr(package, "FAMILY", None)
    if family is None:
        error = getattr(package, "GATE_ERROR", None)
        return EnvFacts(), f"no SGLang family is selected ({error or 'unknown reason'})"
    facts: EnvFacts = family.env
    return facts, None
