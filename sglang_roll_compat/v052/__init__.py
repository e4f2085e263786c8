"""Patch family for SGLang 0.5.1 … 0.5.3.post1.

Module-level ``_launch_subprocesses(server_args, port_args=None)``; children from engine module
globals; unguarded ``signal.signal(SIGQUIT, …)``; NCCL_CUMEM_ENABLE forced from
``enable_symm_mem``; CUDA_DEVICE_MAX_CONNECTIONS=4; TRTLLM_ENABLE_PDL=1 unless the user set 0
(0.5.2 on; 0.5.1 … 0.5.1.post3 force 1, and the env policy puts a user's value back on all).
0.5.3 and 0.5.3.post1 also set CUTE_DSL_LOG_LEVEL / CUTE_DSL_LOG_TO_CONSOLE when unset; their
memory-saver adapter is still ``sglang.srt.torch_memory_saver_adapter`` (it moves in 0.5.3.post2).
"""

from ..envpolicy import EnvFacts
from ..family import OLD_MEMORY_SAVER_MODULE, Family

FAMILY = Family(
    name="v052",
    summary="SGLang 0.5.1-0.5.3.post1: module-level launch, unguarded SIGQUIT handler",
    env=EnvFacts(
        cuda_device_max_connections="4",
        upstream_sets=frozenset({"TF_CPP_MIN_LOG_LEVEL"}),
        upstream_sets_by_release=tuple(
            (r, frozenset({"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"})) for r in ("0.5.3", "0.5.3.post1")
        ),
    ),
    launch="module",
    memory_saver_module=OLD_MEMORY_SAVER_MODULE,
)
