"""Patch family for SGLang 0.5.18.

What differs from ``v0517`` (0.5.17): importing the ``sglang`` package itself calls
``sglang.srt.environ.redirect_third_party_caches()``, which ``setdefault``\\ s
FLASHINFER_WORKSPACE_BASE, TRITON_CACHE_DIR, TORCHINDUCTOR_CACHE_DIR and CUDA_CACHE_PATH to
directories under ``$SGLANG_CACHE_DIR`` (default ``~/.cache/sglang``) in the caller's process,
before any ``Engine`` exists. The env policy must not take those values for the user's own
(``EnvFacts.sglang_cache_defaults``): a value equal to upstream's
``third_party_cache_defaults()`` counts as unset, so every worker's children still get their
private FlashInfer workspace and Triton cache.

Also new, and needing no patch: ``Engine._launch_subprocesses`` takes ``placement_group=None``
(passed on to ``_launch_scheduler_processes`` only when not None); the launch publishes the
server args process-globally (``sglang.srt.runtime_context.publish``, last publish wins).
"""

from ..envpolicy import EnvFacts
from ..family import Family

FAMILY = Family(
    name="v0518",
    summary="SGLang 0.5.18: as 0.5.17, and importing sglang sets cache-dir env defaults",
    env=EnvFacts(
        cuda_device_max_connections="8",
        upstream_cumem=True,
        sglang_cache_defaults=True,
        upstream_sets=frozenset({"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"}),
    ),
    launch="classmethod",
    signals_guarded=True,
    subprocess_watchdog=True,
    register_atexit_noop=False,
)
