"""A stand-in for ROLL's in-flight FP8 rollout patch (``roll.third_party.sglang.fp8``), run as a
child hook: like ROLL's ``monkey_patch_fp8_config`` it rewrites an upstream class attribute,
``Fp8Config.from_config``, inside the child process. ``record`` then reads, in the same child,
what SGLang's own quantization lookup (``get_quantization_config("fp8")``, the one its model
loader uses) resolves to, and leaves a JSON marker in ``$SRC_PROBE_DIR``."""

from __future__ import annotations

import json
import os
from typing import Any

ROLL_NAMES = (
    "TF_CPP_MIN_LOG_LEVEL",
    "CUTE_DSL_LOG_LEVEL",
    "CUTE_DSL_LOG_TO_CONSOLE",
    "TORCH_NCCL_AVOID_RECORD_STREAMS",
    "FLASHINFER_WORKSPACE_BASE",
    "TRITON_CACHE_DIR",
)
REWRITTEN = "_rewritten_by_fp8_standin"


def rewrite_from_config() -> None:
    from sglang.srt.layers.quantization.fp8 import Fp8Config

    original = Fp8Config.__dict__["from_config"].__func__

    def from_config(cls: Any, config: dict[str, Any]) -> Any:
        return original(cls, config)  # ROLL's returns its own config here

    setattr(from_config, REWRITTEN, os.getpid())
    Fp8Config.from_config = classmethod(from_config)  # type: ignore[method-assign,assignment]


def sees_rewrite() -> int | None:
    """The pid that rewrote ``from_config``, as SGLang's own lookup resolves it, else None."""
    from sglang.srt.layers.quantization import get_quantization_config

    bound = get_quantization_config("fp8").from_config  # what the model loader calls
    value = getattr(getattr(bound, "__func__", None), REWRITTEN, None)
    return value if isinstance(value, int) else None


def record() -> None:
    from sglang_roll_compat import child_role

    payload = {
        "role": child_role(),
        "pid": os.getpid(),
        "rewritten_by": sees_rewrite(),
        "env": {n: os.environ.get(n) for n in ROLL_NAMES},
    }
    with open(os.path.join(os.environ["SRC_PROBE_DIR"], f"fp8-{child_role()}-{os.getpid()}.json"), "w") as fh:
        json.dump(payload, fh)
