"""Run by tests/test_cpu_engine.py in a subprocess: a REAL SGLang engine on this CPU, a tiny OPT
(of 0.5.2's models only OPT's get_weights_by_name works: Qwen2 has none, Llama's unpacks its
stacked-parameter table wrongly and answers None; the engine is launched with load_format="dummy",
as RL trainers do), weights pushed as tensors, then the same weights
written as a safetensors checkpoint and loaded from disk.
``python cpu_weights_probe.py OUT_DIR`` writes OUT_DIR/probe.json."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
from safetensors.torch import save_file

from sglang_roll_compat import Engine
from sglang_roll_compat.smoke import engine_args

SAMPLING = {"max_new_tokens": 6, "temperature": 0.0}
PROMPT = [1, 5, 9, 13]
PROBE = "model.decoder.layers.0.fc1.weight"


def opt_config() -> Any:
    from transformers import OPTConfig

    return OPTConfig(
        vocab_size=1024,
        hidden_size=256,
        word_embed_proj_dim=256,
        ffn_dim=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
        num_key_value_heads=4,  # read by SGLang's generic code (OPTConfig has no such field)
        head_dim=64,
        torch_dtype="bfloat16",
        architectures=["OPTForCausalLM"],
    )


def opt_tensors(config: Any, seed: int) -> dict[str, torch.Tensor]:
    """Every parameter of a Hugging Face OPT model of ``config`` (its own names), seeded."""
    from transformers import OPTForCausalLM

    torch.manual_seed(seed)
    model = OPTForCausalLM(config)
    return {name: t.detach().to(torch.bfloat16).clone().contiguous() for name, t in model.state_dict().items()}


def tokens(out: Any) -> list[int]:
    return list(out.get("output_ids") or [])


def main(out_dir: str) -> None:
    config = opt_config()
    model_dir, ckpt_dir = os.path.join(out_dir, "model"), os.path.join(out_dir, "ckpt-a")
    for d in (model_dir, ckpt_dir):
        config.save_pretrained(d)
    weights_a, weights_b = opt_tensors(config, 1), opt_tensors(config, 2)
    save_file(weights_a, os.path.join(ckpt_dir, "model.safetensors"))
    result: dict[str, Any] = {}
    engine = Engine(**engine_args(model_dir, cpu=True))
    try:
        engine.update_weights_from_tensor(list(weights_a.items()))
        result["tensor_a"] = tokens(engine.generate(input_ids=PROMPT, sampling_params=SAMPLING))
        engine.update_weights_from_tensor(list(weights_b.items()))
        result["tensor_b"] = tokens(engine.generate(input_ids=PROMPT, sampling_params=SAMPLING))
        result["disk"] = engine.update_weights_from_disk(ckpt_dir, weight_version="ckpt-a")
        result["disk_a"] = tokens(engine.generate(input_ids=PROMPT, sampling_params=SAMPLING))
        result["weight_version"] = engine.get_weight_version()
        try:
            got = engine.get_weights_by_name(PROBE, truncate_size=3)
            expected = weights_a[PROBE][:3].float()
            result["weights_by_name_shape"] = list(torch.tensor(got).shape)
            result["weights_by_name_max_diff"] = float((torch.tensor(got, dtype=torch.float32) - expected).abs().max())
        except LookupError as exc:  # recorded, so that the test shows what the engine answered
            result["weights_by_name_error"] = str(exc)
        try:
            engine.update_weights_from_disk(os.path.join(out_dir, "missing"))
            result["missing_path"] = "no error"
        except FileNotFoundError as exc:
            result["missing_path"] = str(exc)
    finally:
        engine.shutdown()
    with open(os.path.join(out_dir, "probe.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1])
