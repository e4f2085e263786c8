"""CPU-CI stub of vllm: only the submodules SGLang 0.4.x imports unconditionally exist."""

import sys

import cpu_import_stub

cpu_import_stub.install(
    sys.modules[__name__],
    ["vllm._custom_ops", "vllm.model_executor.layers.activation", "vllm.model_executor.layers.layernorm"],
)
