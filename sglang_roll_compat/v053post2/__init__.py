"""Patch family for SGLang 0.5.3.post2, 0.5.3.post3 and 0.5.4.

As ``v052`` (module-level launch, children from engine module globals, unguarded SIGQUIT handler,
NCCL_CUMEM_ENABLE=int(enable_symm_mem) forced, CUDA_DEVICE_MAX_CONNECTIONS=4, TF_CPP_MIN_LOG_LEVEL=3)
plus CUTE_DSL_LOG_LEVEL / CUTE_DSL_LOG_TO_CONSOLE set when unset (0.5.3+), and the memory-saver
adapter moved to ``sglang.srt.utils`` (0.5.3.post2). 0.5.4.post1 (``v054``) then raises
CUDA_DEVICE_MAX_CONNECTIONS to 8.
"""

from dataclasses import replace

from ..family import MEMORY_SAVER_MODULE
from ..v052 import FAMILY as V052

FAMILY = replace(
    V052,
    name="v053post2",
    summary="SGLang 0.5.3.post2-0.5.4: as 0.5.3, memory-saver adapter under sglang.srt.utils",
    env=replace(
        V052.env,
        upstream_sets=V052.env.upstream_sets | {"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"},
        upstream_sets_by_release=(),
    ),
    memory_saver_module=MEMORY_SAVER_MODULE,
)
