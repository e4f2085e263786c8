"""The frameworks' own call patterns against the REAL SGLang code of this session's release.

* ROLL (tests/roll_pattern.py): SGLang's own ``Engine`` (not our facade) driven the way ROLL's
  strategy drives it, inside a running asyncio loop on a worker thread (a Ray async actor), with
  the launch boundary faked (tests/fake_launch.py: the real ``Engine.__init__`` and the real
  ``io_struct`` request classes; a recording tokenizer manager answers). Where the release lacks a
  field ROLL passes, the test asserts the exact error ROLL's call gets, from :data:`FIRST_WITH`.
* verl: ``_launch_subprocesses(server_args, init_tokenizer_manager_func=...,
  run_scheduler_process_func=...)`` called directly, off the main thread; slime: SGLang's
  ``launch_server`` in a ``multiprocessing.Process`` (spawn) with both allocator variables set in
  the parent. Both really spawn SGLang's scheduler (tests/framework_scenarios.py), which fails
  for lack of a GPU after our child hook has recorded what it saw.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import threading
from pathlib import Path
from typing import Any

import fake_launch
import pytest
import roll_pattern as roll
from helpers import engine_args, run_scenario_script

pytestmark = pytest.mark.sglang
torch = pytest.importorskip("torch")

VERSION = importlib.metadata.version("sglang")
HERE = Path(__file__).parent


def in_async_actor(coro_fn: Any) -> Any:
    """Run ``coro_fn()`` the way a Ray async actor runs a method: in an event loop that runs on a
    thread other than the main thread."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["result"] = asyncio.run(coro_fn())
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    worker = threading.Thread(target=body, name="async-actor")
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "the actor's loop hung"
    if "error" in box:
        raise box["error"]
    return box["result"]


# -- ROLL ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fact", sorted(roll.FIRST_WITH))
def test_roll_request_fields_this_release_has(fact: str) -> None:
    """The data the ROLL tests branch on, checked against the installed wheel."""
    assert roll.has(fact) is roll.expected(fact, VERSION), f"{fact}: the wheel of {VERSION} disagrees with FIRST_WITH"


def test_roll_engine_is_sglangs_own_class_with_the_patches_armed() -> None:
    module = roll.engine_module()
    import sglang_roll_compat

    assert module.Engine.__module__ == "sglang.srt.entrypoints.engine"
    assert module.Engine is not sglang_roll_compat.Engine
    states = {s.name: s.state for s in sglang_roll_compat.status()}
    assert states["engine_init"] == "applied" and states["launch_subprocesses"] == "applied"


def test_roll_launch_generate_and_stream_in_an_async_actor(fake: fake_launch.FakeLaunch) -> None:
    module = roll.engine_module()
    cfg = roll.roll_args(engine_args(), rank=3)

    async def actor() -> dict[str, Any]:
        engine = roll.launch(module, cfg)
        try:
            params = roll.sampling_params(4)
            batch = await roll.batch_generate(engine, [[1, 2, 3], [4, 5]], params, logprob=True)
            one = await roll.generate_one(engine, "roll-0", [1, 2, 3], params)
            return {"engine": engine, "batch": batch, "one": one}
        finally:
            engine.shutdown()

    out = in_async_actor(actor)
    sa = out["engine"].server_args
    assert (sa.skip_tokenizer_init, sa.trust_remote_code, sa.disable_custom_all_reduce) == (True, True, True)
    assert sa.enable_memory_saver is True and 20024 <= sa.port <= 30024
    tm = fake.managers[-1]
    batch_req, one_req = tm.requests("generate_request")
    assert type(batch_req).__name__ == "GenerateReqInput" and batch_req.input_ids == [[1, 2, 3], [4, 5]]
    assert batch_req.sampling_params == roll.sampling_params(4) and batch_req.return_logprob is True
    assert [len(o["output_ids"]) for o in out["batch"]] == [3, 3]  # one output per prompt (n=1)
    assert one_req.rid == "roll-0" and one_req.return_logprob is True
    one = out["one"]
    assert one["output_ids"] == [7, 8, 9] and len(one["logprobs"]) == 3
    assert all(isinstance(lp, float) for lp in one["logprobs"])
    assert one["finish_reason"] == "length"
    assert tm.rid_to_state == {}


def test_roll_abort_of_every_rid_ends_every_stream(fake: fake_launch.FakeLaunch) -> None:
    module = roll.engine_module()

    async def actor() -> dict[str, Any]:
        engine = roll.launch(module, roll.roll_args(engine_args()))
        fake.managers[-1].token_interval = 0.01  # 1000 tokens would take 10 s
        try:
            return await roll.abort_all_while_generating(engine, [[1, 2], [3], [4, 5, 6]], roll.sampling_params(1000))
        finally:
            engine.shutdown()

    out = in_async_actor(actor)
    assert sorted(out["aborted"]) == ["roll-abort-0", "roll-abort-1", "roll-abort-2"]
    assert [r["finish_reason"] for r in out["results"]] == ["abort"] * 3
    assert all(0 < len(r["output_ids"]) < 1000 for r in out["results"])
    assert out["left"] == []
    aborts = [args for name, args, _ in fake.managers[-1].calls if name == "abort_request"]
    assert sorted(a[0] for a in aborts) == sorted(out["aborted"])


def test_roll_offload_and_load_send_the_io_struct_requests(fake: fake_launch.FakeLaunch) -> None:
    module = roll.engine_module()
    tags_ok = roll.expected("ResumeMemoryOccupationReqInput.tags", VERSION)

    async def actor() -> str:
        engine = roll.launch(module, roll.roll_args(engine_args()))
        try:
            await roll.offload(engine)
            try:
                await roll.load(engine, ["weights", "kv_cache"])
            except TypeError as exc:  # what ROLL's call gets where the class has no tags
                return str(exc)
            return ""
        finally:
            engine.shutdown()

    error = in_async_actor(actor)
    tm = fake.managers[-1]
    (release,) = tm.requests("release_memory_occupation")
    assert type(release).__name__ == "ReleaseMemoryOccupationReqInput"
    assert [name for name, _, _ in tm.calls if name != "get_internal_state"][-1:] == (
        ["resume_memory_occupation"] if tags_ok else ["flush_cache"]
    )
    if tags_ok:
        assert error == ""
        (resume,) = tm.requests("resume_memory_occupation")
        assert resume.tags == ["weights", "kv_cache"]
        assert getattr(release, "tags", None) is None  # ROLL releases everything
    else:
        assert "tags" in error  # SGLang < 0.4.10.post2: ResumeMemoryOccupationReqInput has no tags


def test_roll_flattened_bucket_update(fake: fake_launch.FakeLaunch) -> None:
    module = roll.engine_module()
    bucket = roll.expected("UpdateWeightsFromTensorReqInput.load_format=flattened_bucket", VERSION)
    if not bucket:  # a fact of the wheel (FIRST_WITH), checked above: ROLL's import fails here
        with pytest.raises(ImportError, match="weight_sync"):
            roll.bucket_payload([("w", torch.zeros(2))])
        return
    named = [("model.norm.weight", torch.arange(4, dtype=torch.bfloat16)), ("lm_head.weight", torch.ones(2, 3))]

    async def actor() -> Any:
        engine = roll.launch(module, roll.roll_args(engine_args()))
        try:
            return await roll.update_in_bucket(engine, roll.bucket_payload(named), tp=2)
        finally:
            engine.shutdown()

    assert in_async_actor(actor) == (True, "Success")
    (req,) = fake.managers[-1].requests("update_weights_from_tensor")
    assert req.load_format == "flattened_bucket" and req.flush_cache is False
    assert len(req.serialized_named_tensors) == 2 and req.serialized_named_tensors[0] == req.serialized_named_tensors[1]
    from sglang.srt.utils import MultiprocessingSerializer
    from sglang.srt.weight_sync.tensor_bucket import FlattenedTensorBucket

    data = MultiprocessingSerializer.deserialize(req.serialized_named_tensors[0])
    rebuilt = dict(
        FlattenedTensorBucket(
            flattened_tensor=data["flattened_tensor"], metadata=data["metadata"]
        ).reconstruct_tensors()
    )
    for name, tensor in named:
        assert torch.equal(rebuilt[name], tensor) and rebuilt[name].dtype == tensor.dtype


def test_roll_broadcast_update_with_torch_dtypes(fake: fake_launch.FakeLaunch) -> None:
    module = roll.engine_module()
    named = [("model.norm.weight", torch.zeros(4, dtype=torch.bfloat16)), ("lm_head.weight", torch.zeros(2, 3))]
    plural = roll.expected("UpdateWeightsFromDistributedReqInput.names", VERSION)

    async def actor() -> Any:
        engine = roll.launch(module, roll.roll_args(engine_args()))
        try:
            joined = await roll.setup_collective_group(engine, "127.0.0.1", 29555, "roll_fsdp2", "gloo")
            try:
                return joined, await roll.broadcast_parameter(engine, named, "roll_fsdp2")
            except TypeError as exc:
                return joined, str(exc)
        finally:
            engine.shutdown()

    joined, updated = in_async_actor(actor)
    tm = fake.managers[-1]
    (init,) = tm.requests("init_weights_update_group")
    assert (init.master_address, init.master_port, init.rank_offset, init.world_size) == ("127.0.0.1", 29555, 1, 2)
    assert init.group_name == "roll_fsdp2" and init.backend == "gloo" and joined == (True, "Success")
    if plural:
        assert updated == (True, "Success")
        (req,) = tm.requests("update_weights_from_distributed")
        assert req.names == ["model.norm.weight", "lm_head.weight"]
        assert req.dtypes == [torch.bfloat16, torch.float32] and list(req.shapes[1]) == [2, 3]
        assert req.group_name == "roll_fsdp2" and req.flush_cache is False
    else:  # 0.4.6: one tensor per request (name, dtype, shape): ROLL's batched call is refused
        assert "names" in updated and tm.requests("update_weights_from_distributed") == []


def test_roll_generate_request_with_routed_experts_where_the_release_has_it(fake: fake_launch.FakeLaunch) -> None:
    """ROLL's current strategy always passes ``return_routed_experts``; before 0.5.7 the request
    class refuses it, so ROLL's generate_request needs 0.5.7+ as written (a fact, from the wheel)."""
    cls = roll.io_struct().GenerateReqInput
    if roll.expected("GenerateReqInput.return_routed_experts", VERSION):
        assert cls(input_ids=[1], return_routed_experts=False).return_routed_experts is False
    else:
        with pytest.raises(TypeError, match="return_routed_experts"):
            cls(input_ids=[1], return_routed_experts=False)


# -- verl and slime: real spawns -----------------------------------------------------------------
SCENARIOS = "verl,slime"  # one interpreter for both (tests/framework_scenarios.py)
_cache: dict[str, dict[str, Any]] = {}


def run_scenarios(root: Path) -> dict[str, Any]:
    if _cache:
        return _cache
    out = root / "scenarios.json"
    probe = root / "probe"
    proc = run_scenario_script(
        "framework_scenarios.py", [SCENARIOS, str(out)], probe=probe, cache=root / "cache", timeout=400
    )
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    hooks = [json.loads(p.read_text()) for p in sorted(probe.glob("hook-*.json"))]
    for result in results.values():
        result["returncode"] = proc.returncode
        result["stderr_tail"] = proc.stderr[-3000:]
        result["cache_dir"] = str(root / "cache")
    if "verl" in results:  # the verl scheduler is the caller's own child; slime's, the server's
        results["verl"]["hooks"] = [h for h in hooks if h["ppid"] == results["verl"]["pid"]]
    if "slime" in results:
        results["slime"]["hooks"] = [h for h in hooks if h["ppid"] != results["slime"]["pid"]]
    _cache.update(results)
    return _cache


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frameworks")


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.launch
@pytest.mark.timeout(600)  # one scenario process of several SGLang imports: slow on a loaded 2-core machine
def test_verl_direct_launch_reaches_the_scheduler_and_a_failing_child_raises(root: Path) -> None:
    result = run_scenarios(root).get("verl", {})
    assert result.get("survived"), f"the caller died:\n{result.get('stderr_tail')}"
    assert result["loop_running"] is True and result["thread"] != "MainThread"
    assert result["launch_kwargs"] == result["expected_kwargs"]
    assert result["exception"] == "EngineLaunchError", result.get("traceback")
    assert "scheduler" in result["message"]
    assert result["children_left"] == []
    (hook,) = [h for h in result["hooks"] if h["role"] == "scheduler"]
    env = hook["env"]
    assert env["FLASHINFER_WORKSPACE_BASE"].startswith(result["cache_dir"])
    assert env["SGLANG_BLOCK_NONZERO_RANK_CHILDREN"] == "0"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] is None


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.launch
@pytest.mark.timeout(600)
def test_slime_launch_server_process_neither_allocator_variable_reaches_the_scheduler(root: Path) -> None:
    result = run_scenarios(root).get("slime", {})
    assert result.get("survived"), result.get("stderr_tail")
    assert result["server_exitcode"] is not None
    both = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "PYTORCH_ALLOC_CONF": "expandable_segments:True"}
    assert result["parent_env"] == both
    # the control: the scheduler inherited both (SGLang's own launch removes neither) ...
    assert result["scheduler_environ"] == both, result["stderr_tail"]
    # ... and by the time SGLang's scheduler code ran, our child entry had removed both
    (hook,) = [h for h in result["hooks"] if h["role"] == "scheduler"]
    assert hook["env"]["PYTORCH_CUDA_ALLOC_CONF"] is None
    assert hook["env"]["PYTORCH_ALLOC_CONF"] is None
    assert result["children_left"] == []
