"""CPU-CI stub of sgl_kernel (SGLang binds names from it at import; nothing is called)."""

import sys

import cpu_import_stub

cpu_import_stub.install(sys.modules[__name__])

# SGLang 0.4.10.x calls torch._C._cpu._is_amx_tile_supported() unguarded at import; torch 2.13
# removed it. sglang.srt.utils imports sgl_kernel first, so this shim reaches children too.
import torch  # noqa: E402

if not hasattr(torch._C._cpu, "_is_amx_tile_supported"):
    torch._C._cpu._is_amx_tile_supported = lambda: False
