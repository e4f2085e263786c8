"""Patch family for SGLang 0.4.6 … 0.4.9.post2 (0.4.6, 0.4.6.post1 … .post5, 0.4.7, 0.4.7.post1, 0.4.8,
0.4.8.post1, 0.4.9, 0.4.9.post1, 0.4.9.post2).

What differs from the later releases: ``_set_envs_and_config`` forces NCCL_CUMEM_ENABLE=0 and
NCCL_NVLS_ENABLE from ``enable_nccl_nvls`` (no ``enable_symm_mem`` yet, so the env policy keeps
upstream's NCCL values), forces CUDA_DEVICE_MAX_CONNECTIONS=4, sets no TRTLLM_ENABLE_PDL,
installs a SIGCHLD handler that reaps any child of the caller, and keeps the Triton
cache-manager workaround (triton-lang/triton#4295) for tp*dp > 1. From 0.4.8 the launch function
returns 3 items (the template manager added), which the shim passes through.
"""

from ..envpolicy import EnvFacts
from ..family import OLD_MEMORY_SAVER_MODULE, Family

FAMILY = Family(
    name="v046post4",
    summary="SGLang 0.4.6-0.4.9.post2: module-level launch, unguarded SIGQUIT+SIGCHLD handlers",
    env=EnvFacts(
        symm_mem_args=False,
        nccl_nvls_arg=False,
        trtllm_pdl=False,
        cuda_device_max_connections="4",
        triton_cache_manager=True,
        upstream_sets=frozenset(
            {"TF_CPP_MIN_LOG_LEVEL", "TORCH_NCCL_AVOID_RECORD_STREAMS"}
        ),  # forced by _set_envs_and_config
    ),
    launch="module",
    sigchld_handler=True,
    memory_saver_module=OLD_MEMORY_SAVER_MODULE,
)
