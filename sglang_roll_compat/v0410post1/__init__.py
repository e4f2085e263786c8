"""Patch family for SGLang 0.4.10.post1.

As ``v049post4`` (module-level launch, unguarded SIGQUIT handler, NCCL_CUMEM_ENABLE=0 and
NCCL_NVLS_ENABLE from ``enable_nccl_nvls`` forced, no ``enable_symm_mem`` yet,
CUDA_DEVICE_MAX_CONNECTIONS=4, no TRTLLM_ENABLE_PDL, no Triton cache manager) except that the
SIGCHLD handler is gone. 0.4.10.post2 (``v0410``) then adds ``enable_symm_mem``.
"""

from dataclasses import replace

from ..v049post4 import FAMILY as V049POST4

FAMILY = replace(
    V049POST4,
    name="v0410post1",
    summary="SGLang 0.4.10.post1: module-level launch, unguarded SIGQUIT handler, NCCL forced",
    sigchld_handler=False,
)
