"""Model configs the package ships (configs only: weights come from ``load_format="dummy"``)."""

from __future__ import annotations

from pathlib import Path

TINY_QWEN2 = Path(__file__).parent / "tiny-qwen2"


def tiny_model_path() -> str:
    """A 2-layer Qwen2 config (hidden 256, vocab 1024, bf16): no weights, no tokenizer needed."""
    return str(TINY_QWEN2)


SMALL_QWEN2 = Path(__file__).parent / "small-qwen2"


def small_model_path() -> str:
    """A 4-layer Qwen2 config (hidden 1024, vocab 32000, ~110M parameters, ~220 MB in bf16): big
    enough to measure weight-update bandwidth on a GPU, still no weights or tokenizer needed."""
    return str(SMALL_QWEN2)


QWEN2_7B_SHAPE = Path(__file__).parent / "qwen2-7b-shape"


def qwen2_7b_shape_path() -> str:
    """Qwen2-7B's shapes (28 layers, hidden 3584, vocab 152064, ~7.6B parameters, ~15.2 GB in
    bf16) as a config only: with ``load_format="dummy"`` it measures weight sync and memory
    release at a real model's size without downloading one."""
    return str(QWEN2_7B_SHAPE)
