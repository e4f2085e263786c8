"""Patch family for SGLang 0.4.10.post2.

Same launch path as 0.5.2 (module-level ``_launch_subprocesses``, children from module
globals); its ``_set_envs_and_config`` differs: it also forces TORCH_NCCL_AVOID_RECORD_STREAMS=1
and sets no TRTLLM_ENABLE_PDL. NCCL_CUMEM_ENABLE follows ``enable_symm_mem`` (forced).
"""

from ..envpolicy import EnvFacts
from ..family import OLD_MEMORY_SAVER_MODULE, Family

FAMILY = Family(
    name="v0410",
    summary="SGLang 0.4.10.post2: module-level launch, unguarded SIGQUIT handler, no PDL env",
    env=EnvFacts(
        trtllm_pdl=False,
        cuda_device_max_connections="4",
        upstream_sets=frozenset(
            {"TF_CPP_MIN_LOG_LEVEL", "TORCH_NCCL_AVOID_RECORD_STREAMS"}
        ),  # forced by _set_envs_and_config
    ),
    launch="module",
    memory_saver_module=OLD_MEMORY_SAVER_MODULE,
)
