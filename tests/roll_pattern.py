"""ROLL's SGLang strategy, call for call (roll/distributed/strategy/sglang_strategy.py): what it
does with SGLang's *own* Engine once ``roll.third_party.sglang`` becomes our package.

Shared by the fake-boundary tests of every release (tests/test_frameworks.py), the real CPU engine
and the Ray async actor (tests/test_ray.py). Each step is ROLL's exact call; the functions only
add what a test needs to look at the result. Where a release lacks a request class field that
ROLL passes, :data:`FIRST_WITH` says so (checked against the installed wheel by a test).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import random
from collections.abc import Sequence
from typing import Any

from packaging.version import Version

# The first supported release whose io_struct has what ROLL's call needs (read from the wheels of
# every supported release: 0.4.6.post1/.post4/.post5 lack the memory tags and take one tensor per
# distributed update; 0.4.x has no flattened-bucket format; return_routed_experts comes in 0.5.7).
FIRST_WITH: dict[str, str] = {
    "ReleaseMemoryOccupationReqInput.tags": "0.4.8",
    "ResumeMemoryOccupationReqInput.tags": "0.4.8",
    "UpdateWeightsFromDistributedReqInput.names": "0.4.9",
    "UpdateWeightsFromDistributedReqInput.dtypes": "0.4.9",
    "UpdateWeightsFromDistributedReqInput.shapes": "0.4.9",
    "UpdateWeightsFromDistributedReqInput.flush_cache": "0.4.9",
    "UpdateWeightsFromTensorReqInput.load_format=flattened_bucket": "0.5.1",  # weight_sync.tensor_bucket
    "GenerateReqInput.return_routed_experts": "0.5.7",  # ROLL always passes it (router replay)
}


def engine_module() -> Any:
    """SGLang's engine module with our patches armed, reached the way ROLL's strategy reaches it
    after its one-line change: ``from sglang_roll_compat.roll import patch as sglang_patch``."""
    from sglang_roll_compat.roll import patch as sglang_patch

    module = sglang_patch.engine.engine_module
    assert module is importlib.import_module("sglang.srt.entrypoints.engine")
    return module


def io_struct() -> Any:
    return importlib.import_module("sglang.srt.managers.io_struct")


def has(fact: str) -> bool:
    """Whether the installed wheel has ``fact`` (a key of :data:`FIRST_WITH`)."""
    if fact.endswith("=flattened_bucket"):
        return importlib.util.find_spec("sglang.srt.weight_sync") is not None and (
            importlib.util.find_spec("sglang.srt.weight_sync.tensor_bucket") is not None
        )
    cls_name, field = fact.split(".")
    cls = getattr(io_struct(), cls_name)
    return field in inspect.signature(cls).parameters  # dataclasses, and the classes of 0.5.14+


def expected(fact: str, version: str) -> bool:
    return Version(version) >= Version(FIRST_WITH[fact])


def roll_args(base: dict[str, Any], rank: int = 0) -> dict[str, Any]:
    """``sglang_config`` as ROLL's ``SgLangStrategy.initialize`` completes it."""
    cfg = dict(base)
    cfg.setdefault("enable_memory_saver", True)
    cfg.update(
        {
            "skip_tokenizer_init": True,
            "trust_remote_code": True,
            "tp_size": 1,
            "port": random.randint(20000, 30000) + rank * 8,
            "disable_custom_all_reduce": True,
            "nnodes": 1,
            "node_rank": 0,
        }
    )
    return cfg


def sampling_params(max_new_tokens: int, eos: Sequence[int] = ()) -> dict[str, Any]:
    """ROLL's ``create_sampling_params_for_sglang`` for greedy decoding."""
    return {
        "max_new_tokens": max_new_tokens,
        "temperature": 0.0,
        "top_p": 1.0,
        "top_k": -1,
        "stop_token_ids": list(eos),
        "repetition_penalty": 1.0,
        "n": 1,
        "stop": [],
        "no_stop_trim": True,
    }


def launch(module: Any, cfg: dict[str, Any]) -> Any:
    """``SglangEngine.initialize``: the engine, then the handle loop by hand."""
    engine = module.Engine(**cfg)
    engine.tokenizer_manager.auto_create_handle_loop()
    return engine


async def batch_generate(engine: Any, prompts: list[list[int]], params: dict[str, Any], logprob: bool) -> Any:
    return await engine.async_generate(input_ids=prompts, sampling_params=params, return_logprob=logprob)


async def generate_one(engine: Any, rid: str, prompt: list[int], params: dict[str, Any]) -> dict[str, Any]:
    """``SgLangStrategy.generate_request`` + ``postprocess_generate`` for one request."""
    obj = io_struct().GenerateReqInput(input_ids=prompt, sampling_params=params, rid=rid, return_logprob=True)
    chunks = None
    async for chunk in engine.tokenizer_manager.generate_request(obj, None):
        chunks = chunk  # ROLL keeps the last one
    assert chunks is not None
    last = chunks[0] if isinstance(chunks, list) else chunks
    ids = last.get("output_ids", [])
    logprobs = last["meta_info"].get("output_token_logprobs") or []
    finish = last["meta_info"]["finish_reason"]
    return {
        "rid": rid,
        "output_ids": list(ids),
        "logprobs": [info[0] for info in logprobs[: len(ids)]],
        "finish_reason": finish["type"] if isinstance(finish, dict) else finish,
    }


async def abort_all_while_generating(
    engine: Any, prompts: list[list[int]], params: dict[str, Any], timeout: float = 60.0
) -> dict[str, Any]:
    """ROLL's ``abort_requests(None)``: every key of ``rid_to_state`` aborted while the requests
    generate; returns each request's result and the rids that were aborted."""
    tm = engine.tokenizer_manager
    rids = [f"roll-abort-{i}" for i in range(len(prompts))]
    tasks = [asyncio.ensure_future(generate_one(engine, rid, p, params)) for rid, p in zip(rids, prompts, strict=True)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not set(rids) <= set(tm.rid_to_state) and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # let them generate a little
    aborted = list(tm.rid_to_state)
    for rid in aborted:
        tm.abort_request(rid)
    results = await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    return {"aborted": aborted, "results": results, "left": list(tm.rid_to_state)}


async def offload(engine: Any) -> None:
    """``SglangEngine.release_memory_occupation``."""
    await engine.tokenizer_manager.release_memory_occupation(io_struct().ReleaseMemoryOccupationReqInput(), None)


async def load(engine: Any, tags: list[str]) -> None:
    """``SgLangStrategy.load_states``: flush, then resume the tags that were released."""
    await engine.tokenizer_manager.flush_cache()
    await engine.tokenizer_manager.resume_memory_occupation(io_struct().ResumeMemoryOccupationReqInput(tags=tags), None)


def bucket_payload(named: list[tuple[str, Any]]) -> Any:
    """ROLL's ``serialize_named_weights(..., infer_strategy="sglang")`` (which patches torch's
    reductions first, process-wide: done here only for CUDA tensors, see below)."""
    from sglang.srt.weight_sync.tensor_bucket import FlattenedTensorBucket

    try:
        from sglang.srt.utils.patch_torch import monkey_patch_torch_reductions
    except ImportError:
        from sglang.srt.patch_torch import monkey_patch_torch_reductions
    from sglang.srt.utils import MultiprocessingSerializer

    if any(t.is_cuda for _, t in named):  # ROLL's tensors are on the GPU; SGLang's patched
        monkey_patch_torch_reductions()  # reduction assumes a CUDA device (IndexError on a CPU one)
    bucket = FlattenedTensorBucket(named_tensors=named)
    data = {"flattened_tensor": bucket.get_flattened_tensor(), "metadata": bucket.get_metadata()}
    return MultiprocessingSerializer.serialize(data, output_str=True)


async def update_in_bucket(engine: Any, payload: Any, tp: int = 1) -> Any:
    """``SgLangStrategy.update_parameter_in_bucket`` (one payload per TP rank)."""
    obj = io_struct().UpdateWeightsFromTensorReqInput(
        load_format="flattened_bucket", flush_cache=False, serialized_named_tensors=[payload] * tp
    )
    return await engine.tokenizer_manager.update_weights_from_tensor(obj)


async def setup_collective_group(engine: Any, address: str, port: int, group: str, backend: str) -> Any:
    """``SgLangStrategy.setup_collective_group`` with the trainer as rank 0."""
    obj = io_struct().InitWeightsUpdateGroupReqInput(
        master_address=address, master_port=port, rank_offset=1, world_size=2, group_name=group, backend=backend
    )
    return await engine.tokenizer_manager.init_weights_update_group(obj)


async def broadcast_parameter(engine: Any, named: list[tuple[str, Any]], group: str) -> Any:
    """``SgLangStrategy.broadcast_parameter``: torch dtypes and shapes, as ROLL's trainer sends them."""
    obj = io_struct().UpdateWeightsFromDistributedReqInput(
        names=[n for n, _ in named],
        dtypes=[t.dtype for _, t in named],
        shapes=[t.shape for _, t in named],
        group_name=group,
        flush_cache=False,
    )
    return await engine.tokenizer_manager.update_weights_from_distributed(obj)
