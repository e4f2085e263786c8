"""Patch family for SGLang 0.4.9.post4, 0.4.9.post5 and 0.4.9.post6.

As ``v046post4`` (module-level launch, unguarded SIGQUIT and SIGCHLD handlers, NCCL_CUMEM_ENABLE=0
and NCCL_NVLS_ENABLE from ``enable_nccl_nvls`` forced, no ``enable_symm_mem``,
CUDA_DEVICE_MAX_CONNECTIONS=4, no TRTLLM_ENABLE_PDL) except one thing: ``_set_envs_and_config``
no longer installs the Triton cache-manager workaround (removed in 0.4.9.post4).
"""

from dataclasses import replace

from ..v046post4 import FAMILY as V046POST4

FAMILY = replace(
    V046POST4,
    name="v049post4",
    summary="SGLang 0.4.9.post4-0.4.9.post6: as 0.4.6.post*, without the Triton cache manager",
    env=replace(V046POST4.env, triton_cache_manager=False),
)
