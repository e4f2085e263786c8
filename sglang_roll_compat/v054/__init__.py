"""Patch family for SGLang 0.5.4.post1 … 0.5.9.

Module-level ``_launch_subprocesses``; up to 0.5.6 the children come from engine module
globals (0.5.6's DP controller binds its scheduler function as a def-time default), from 0.5.7
from the ``run_scheduler_process_func`` argument taken from ``Engine``'s class attribute (0.5.7's
signature, 4-tuple result, is unchanged through 0.5.9; 0.5.9 only adds scheduler parameters
``attn_cp_rank``/``moe_dp_rank``, which the trampoline forwards untouched). The ``mp`` proxy hooks
the processes where they are created, so both styles are covered by one mechanism.
CUDA_DEVICE_MAX_CONNECTIONS=8; NCCL_CUMEM_ENABLE respects the user from 0.5.4.post2 (0.5.4.post1
forces it from ``enable_symm_mem``; the env policy puts a user's value back either way). Unguarded
``signal.signal(SIGQUIT, …)`` (off the main thread the shim's signal proxy skips it); no
``SubprocessWatchdog``; importing ``engine.py`` replaces ``threading._register_atexit``.
"""

from ..envpolicy import EnvFacts
from ..family import Family

FAMILY = Family(
    name="v054",
    summary="SGLang 0.5.4.post1-0.5.9: module-level launch, children as globals or arguments",
    env=EnvFacts(
        cuda_device_max_connections="8",
        upstream_sets=frozenset({"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"}),  # set when unset (0.5.3+)
        # TF_CPP_MIN_LOG_LEVEL=3 is forced up to 0.5.5.post2 (read from the wheels) and gone from 0.5.5.post3
        upstream_sets_by_release=tuple(
            (r, frozenset({"TF_CPP_MIN_LOG_LEVEL"}))
            for r in ("0.5.4.post1", "0.5.4.post2", "0.5.4.post3", "0.5.5", "0.5.5.post1", "0.5.5.post2")
        ),
    ),
    launch="module",
)
