"""Patch family for SGLang 0.5.19 … 0.5.23.

What differs from ``v0518`` (0.5.18): ``ServerArgs`` resolution moved out of
construction. ``Engine._launch_subprocesses`` calls ``server_args.resolve_once()`` right before
``_set_envs_and_config``; the record's fields keep the raw input and what resolution decided
lives in declarations, which ``_set_envs_and_config`` reads through
``resolving_view(server_args)``. The env policy reads the server args the same way
(``EnvFacts.resolved_view``): e.g. resolution turns ``enable_symm_mem`` off on devices without
NCCL symmetric memory and may declare ``dp_size``/``enable_dp_attention``. Resolution may also
``setdefault`` NCCL_CUMEM_ENABLE=1 (``moe_a2a_backend="deepep_v2"``), kept as in ``v0517``;
importing sglang sets cache-dir defaults as in ``v0518``.
``_set_envs_and_config`` no longer sets CUDA_MODULE_LOADING (the env policy still defaults it to
AUTO).

Also new, and needing no patch: ``ServerArgs`` is sealed by ``resolve_once`` (any assignment
raises) and is a ``msgspec.Struct`` from 0.5.20 (``dataclasses.asdict``/``fields`` fail; use
``msgspec.structs``); 0.5.21 adds ``Engine.begin_weight_update``/``end_weight_update`` and a
main-thread-guarded SIGTERM handler on ``node_rank >= 1`` (reached only when
SGLANG_BLOCK_NONZERO_RANK_CHILDREN is not ``0``); 0.5.22 pre-launches attention-DP schedulers
from the engine through ``run_scheduler_process_with_init_pipe`` (an ``mp.Process`` of the engine
module, so the ``mp`` proxy hooks it as a scheduler); 0.5.23 may also turn NCCL_CUMEM_ENABLE on
for the KV-shard symmetric gather.
"""

from ..envpolicy import EnvFacts
from ..family import Family

FAMILY = Family(
    name="v0519",
    summary="SGLang 0.5.19-0.5.23: classmethod launch, server args resolved at launch (resolving_view)",
    env=EnvFacts(
        cuda_device_max_connections="8",
        upstream_cumem=True,
        resolved_view=True,
        sglang_cache_defaults=True,
        upstream_sets=frozenset({"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"}),
    ),
    launch="classmethod",
    signals_guarded=True,
    subprocess_watchdog=True,
    register_atexit_noop=False,
)
