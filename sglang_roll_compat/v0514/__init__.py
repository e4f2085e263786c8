"""Patch family for SGLang 0.5.14 … 0.5.16.

What differs from ``v0510`` (0.5.10 … 0.5.13.post1): importing ``engine.py`` no longer replaces
``threading._register_atexit`` with a no-op (removed in 0.5.14), so there is nothing to undo.

Everything else is as in ``v0510``: classmethod ``Engine._launch_subprocesses`` (five-tuple
result), SIGQUIT handler only on the main thread, ``SubprocessWatchdog`` (not started by the
shim). ``_set_envs_and_config`` additionally sets NCCL_GRAPH_MIXING_SUPPORT=0 when
``dcp_size > 1`` (0.5.15+; not managed by the env policy). ``ServerArgs`` is still a mutable
dataclass (0.5.16 refuses assignment only with SGLANG_STRICT_CONFIG_MUTATION set); the shim never
assigns to it.
"""

from ..envpolicy import EnvFacts
from ..family import Family

FAMILY = Family(
    name="v0514",
    summary="SGLang 0.5.14-0.5.16: classmethod launch, guarded SIGQUIT, no atexit hack",
    env=EnvFacts(
        cuda_device_max_connections="8", upstream_sets=frozenset({"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"})
    ),
    launch="classmethod",
    signals_guarded=True,
    subprocess_watchdog=True,
    register_atexit_noop=False,
)
