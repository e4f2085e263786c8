"""A reference for the verify_weights tests, written independently of weightsync.py: Hugging Face
tensors of a small Qwen2-shaped model, and what each tensor-parallel rank of an SGLang-style
engine holds of them (fused qkv_proj / gate_up_proj, column/row/vocab-parallel slices, replicated
KV heads when tp exceeds their number, vocab padding to a multiple of 64), built head by head
with torch.chunk and torch.cat."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

VOCAB, HIDDEN, INTER, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 100, 32, 48, 4, 2, 8, 2


def hf_tensors(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    out = {"model.embed_tokens.weight": r(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out.update(
            {
                p + "self_attn.q_proj.weight": r(HEADS * HEAD_DIM, HIDDEN),
                p + "self_attn.q_proj.bias": r(HEADS * HEAD_DIM),
                p + "self_attn.k_proj.weight": r(KV_HEADS * HEAD_DIM, HIDDEN),
                p + "self_attn.k_proj.bias": r(KV_HEADS * HEAD_DIM),
                p + "self_attn.v_proj.weight": r(KV_HEADS * HEAD_DIM, HIDDEN),
                p + "self_attn.v_proj.bias": r(KV_HEADS * HEAD_DIM),
                p + "self_attn.o_proj.weight": r(HIDDEN, HEADS * HEAD_DIM),
                p + "mlp.gate_proj.weight": r(INTER, HIDDEN),
                p + "mlp.up_proj.weight": r(INTER, HIDDEN),
                p + "mlp.down_proj.weight": r(HIDDEN, INTER),
                p + "input_layernorm.weight": r(HIDDEN),
                p + "post_attention_layernorm.weight": r(HIDDEN),
            }
        )
    out["model.norm.weight"] = r(HIDDEN)
    out["lm_head.weight"] = r(VOCAB, HIDDEN)
    return out


def _heads(t: torch.Tensor, n: int) -> list[torch.Tensor]:
    return list(t.reshape(n, HEAD_DIM, *t.shape[1:]).unbind(0))


def _kv_for_rank(t: torch.Tensor, rank: int, tp: int) -> torch.Tensor:
    heads = _heads(t, KV_HEADS)
    if tp <= KV_HEADS:
        per = KV_HEADS // tp
        return torch.cat(heads[rank * per : (rank + 1) * per])
    return heads[rank // (tp // KV_HEADS)]  # one head, replicated on tp // KV_HEADS ranks


def _vocab_rows(t: torch.Tensor, rank: int, tp: int, dtype: torch.dtype) -> torch.Tensor:
    padded = -(-VOCAB // 64) * 64
    full = torch.zeros(padded, t.shape[1], dtype=dtype)
    full[:VOCAB] = t.to(dtype)
    return full.chunk(tp)[rank].clone()


def rank_model(
    hf: dict[str, torch.Tensor], rank: int, tp: int, dtype: torch.dtype = torch.bfloat16
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(parameters, modules) of one TP rank, named as SGLang names them."""
    params: dict[str, torch.Tensor] = {}
    modules: dict[str, Any] = {}
    params["model.embed_tokens.weight"] = _vocab_rows(hf["model.embed_tokens.weight"], rank, tp, dtype)
    params["lm_head.weight"] = _vocab_rows(hf["lm_head.weight"], rank, tp, dtype)
    kv_local = max(1, KV_HEADS // tp)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for kind in ("weight", "bias"):
            q = torch.cat(
                _heads(hf[p + f"self_attn.q_proj.{kind}"], HEADS)[rank * HEADS // tp : (rank + 1) * HEADS // tp]
            )
            k = _kv_for_rank(hf[p + f"self_attn.k_proj.{kind}"], rank, tp)
            v = _kv_for_rank(hf[p + f"self_attn.v_proj.{kind}"], rank, tp)
            params[p + f"self_attn.qkv_proj.{kind}"] = torch.cat([q, k, v]).to(dtype)
        modules[p + "self_attn.qkv_proj"] = SimpleNamespace(
            num_heads=HEADS // tp, num_kv_heads=kv_local, head_size=HEAD_DIM
        )
        params[p + "self_attn.o_proj.weight"] = hf[p + "self_attn.o_proj.weight"].chunk(tp, dim=1)[rank].to(dtype)
        gate = hf[p + "mlp.gate_proj.weight"].chunk(tp)[rank]
        up = hf[p + "mlp.up_proj.weight"].chunk(tp)[rank]
        params[p + "mlp.gate_up_proj.weight"] = torch.cat([gate, up]).to(dtype)
        modules[p + "mlp.gate_up_proj"] = SimpleNamespace(output_sizes=[INTER, INTER])
        params[p + "mlp.down_proj.weight"] = hf[p + "mlp.down_proj.weight"].chunk(tp, dim=1)[rank].to(dtype)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            params[p + f"{norm}.weight"] = hf[p + f"{norm}.weight"].to(dtype).clone()
    params["model.norm.weight"] = hf["model.norm.weight"].to(dtype).clone()
    return {k: v.contiguous() for k, v in params.items()}, modules
