"""Patch family for SGLang 0.5.17.

What differs from ``v0514`` (0.5.14 … 0.5.16): ``_set_envs_and_config`` may turn
NCCL_CUMEM_ENABLE (and NCCL_MNNVL_ENABLE) on by itself, without ``enable_symm_mem``: with
``nnodes > 1`` on an MNNVL fabric (GB200/GB300) it ``setdefault``\\ s both to ``1``. The env
policy keeps such a ``1`` when the user had set nothing (``EnvFacts.upstream_cumem``) instead of
resetting it to ``0``, which would break cross-node NVLink.

Also new, and needing no patch: ``Engine._launch_subprocesses`` returns a 6-tuple (``+
weight_cache_daemon_procs``); ``gc.set_threshold`` moved into ``_set_envs_and_config``;
``ServerArgs`` refuses any assignment after construction (the shim never assigns to it; it edits
nothing but ``Engine(**kwargs)`` before construction); the offline engine refuses to start with
SGLANG_RUST_SERVER set.
"""

from ..envpolicy import EnvFacts
from ..family import Family

FAMILY = Family(
    name="v0517",
    summary="SGLang 0.5.17: classmethod launch, frozen ServerArgs, NCCL cuMem on for MNNVL",
    env=EnvFacts(
        cuda_device_max_connections="8",
        upstream_cumem=True,
        upstream_sets=frozenset({"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"}),
    ),
    launch="classmethod",
    signals_guarded=True,
    subprocess_watchdog=True,
    register_atexit_noop=False,
)
