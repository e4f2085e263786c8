"""Run by tests/test_weight_sync.py in a subprocess: a REAL SGLang engine on this CPU (the small
Qwen2 config the package ships, ~110M parameters, load_format="dummy"), weights pushed with
update_weights_from_tensor, then verify_weights; one tensor corrupted on the engine (pushed
alone) and verified again; the cost of a verify against the cost of the update, measured side by
side (interleaved rounds, medians).
``python cpu_verify_probe.py OUT_DIR [ROUNDS]`` writes OUT_DIR/verify.json."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Any

import torch

from sglang_roll_compat import Engine
from sglang_roll_compat.models import small_model_path
from sglang_roll_compat.smoke import engine_args

CORRUPT = "model.layers.1.self_attn.k_proj.weight"


def hf_tensors(seed: int) -> dict[str, torch.Tensor]:
    """Every parameter of a Hugging Face Qwen2 model of the shipped config (its own names)."""
    from transformers import AutoConfig, Qwen2ForCausalLM

    config = AutoConfig.from_pretrained(small_model_path())
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, param in model.state_dict().items():
        out[name] = (torch.randn(param.shape, generator=gen) * 0.02).to(torch.bfloat16).contiguous()
    return out


def summary(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "complete": report.complete,
        "matched": len(report.matched),
        "mismatched": [[m.name, m.max_abs_diff] for m in report.mismatched],
        "missing": list(report.missing),
        "unknown": [[u.name, list(u.suggestions)] for u in report.unknown],
    }


def main(out_dir: str, rounds: int) -> None:
    weights = hf_tensors(1)
    named = list(weights.items())
    result: dict[str, Any] = {
        "n_tensors": len(named),
        "bytes": sum(t.numel() * t.element_size() for t in weights.values()),
    }
    engine = Engine(**engine_args(small_model_path(), cpu=True))
    try:
        assert engine.update_weights_from_tensor(named)[0]
        t0 = time.perf_counter()
        result["first"] = summary(engine.verify_weights(named))
        result["first_verify_s"] = time.perf_counter() - t0  # includes the one-time layout request
        bad = weights[CORRUPT].clone()
        bad[5, 7] += 0.5
        assert engine.update_weights_from_tensor([(CORRUPT, bad)])[0]
        result["corrupted_name"] = CORRUPT
        result["corrupted"] = summary(engine.verify_weights(named))
        assert engine.update_weights_from_tensor([(CORRUPT, weights[CORRUPT])])[0]
        result["after_repair"] = summary(engine.verify_weights(named))
        updates, verifies = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            engine.update_weights_from_tensor(named)
            updates.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            engine.verify_weights(named)
            verifies.append(time.perf_counter() - t0)
        result["cost"] = {
            "rounds": rounds,
            "update_s": statistics.median(updates),
            "verify_s": statistics.median(verifies),
            "ratio": statistics.median(v / u for v, u in zip(verifies, updates, strict=True)),
            "updates_s": updates,
            "verifies_s": verifies,
        }
    finally:
        engine.shutdown()
    with open(os.path.join(out_dir, "verify.json"), "w", encoding="utf-8") as fh:
        json.dump(result, fh)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5)
