"""The uniform Engine facade against the REAL upstream Engine class of this session's release,
with only the launch boundary faked (tests/fake_launch.py): each method must send the right
upstream request, with the right fields, or adapt/refuse as ``capabilities()`` says."""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import fake_launch
import pytest
from fake_launch import tm
from helpers import engine_args, package_parent

import sglang_roll_compat
from sglang_roll_compat import Engine, EngineClosedError, EngineDeadError, ServerArgsError
from sglang_roll_compat.errors import MemoryReleaseTimeoutError

pytestmark = pytest.mark.sglang
torch = pytest.importorskip("torch")

ARGS = engine_args()
GOLDEN = Path(__file__).parent / "golden" / "capabilities.json"


@pytest.fixture
def engine(fake: fake_launch.FakeLaunch) -> Any:
    e = Engine(worker_name="facade-test", **ARGS)
    yield e
    e.shutdown()


def caps(engine: Any) -> dict[str, str]:
    return {k: v["support"] for k, v in engine.capabilities().items()}


# -- generation ----------------------------------------------------------------------------------
def test_generate_sends_a_generate_request(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    out = engine.generate(input_ids=[1, 2, 3], sampling_params={"max_new_tokens": 3, "temperature": 0.0})
    assert out["output_ids"] == [7, 8, 9]
    (req,) = tm(fake).requests("generate_request")
    assert type(req).__name__ == "GenerateReqInput"
    assert req.input_ids == [1, 2, 3] and req.sampling_params == {"max_new_tokens": 3, "temperature": 0.0}
    assert req.return_logprob is False


def test_generate_rejects_ambiguous_input_and_unknown_kwargs(engine: Any) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        engine.generate(prompt="a", input_ids=[1])
    with pytest.raises(TypeError, match="does not take"):
        engine.generate(input_ids=[1], no_such_option=True)


def test_async_generate_inside_a_running_loop(fake: fake_launch.FakeLaunch) -> None:
    async def actor() -> tuple[Any, str]:
        e = Engine(**ARGS)  # created inside the loop, as a Ray async actor would
        try:
            out = await e.async_generate(input_ids=[5], sampling_params={"max_new_tokens": 1})
            try:
                e.flush_cache()
                sync_error = ""
            except RuntimeError as exc:
                sync_error = str(exc)
            return out, sync_error
        finally:
            e.shutdown()

    out, sync_error = asyncio.run(actor())
    assert out["output_ids"] == [7, 8, 9]
    assert "await the async_ variant" in sync_error


# -- weights -------------------------------------------------------------------------------------
def _decode(payload: Any) -> Any:
    from sglang.srt.entrypoints.engine import MultiprocessingSerializer

    return MultiprocessingSerializer.deserialize(payload)


def test_update_weights_from_tensor(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    named = [
        ("model.layers.0.mlp.down_proj.weight", torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)),
        ("lm_head.weight", torch.ones(4, dtype=torch.bfloat16)),
        ("model.norm.weight", torch.full((2,), 3.0, dtype=torch.float32)),
    ]
    assert engine.update_weights_from_tensor(named) == (True, "Success")
    reqs = tm(fake).requests("update_weights_from_tensor")
    tp = engine.server_args.tp_size
    if caps(engine)["update_weights_from_tensor"] == "adapted":  # flattened buckets, one per dtype
        assert [r.load_format for r in reqs] == ["flattened_bucket", "flattened_bucket"]
        assert [r.flush_cache for r in reqs] == [False, True]
        from sglang.srt.weight_sync.tensor_bucket import FlattenedTensorBucket

        rebuilt = {}
        for r in reqs:
            assert len(r.serialized_named_tensors) == tp
            payload = _decode(r.serialized_named_tensors[0])
            bucket = FlattenedTensorBucket(flattened_tensor=payload["flattened_tensor"], metadata=payload["metadata"])
            rebuilt.update(dict(bucket.reconstruct_tensors()))
    else:
        (req,) = reqs
        assert req.load_format is None and req.flush_cache is True
        rebuilt = dict(_decode(req.serialized_named_tensors[0]))
    assert set(rebuilt) == {n for n, _ in named}
    for name, tensor in named:
        assert torch.equal(rebuilt[name], tensor) and rebuilt[name].dtype == tensor.dtype


def _sent_names(engine: Any, reqs: list[Any]) -> list[list[tuple[str, Any]]]:
    """Per request: the (name, tensor) pairs it carried, flattened bucket or per-tensor list."""
    out = []
    for r in reqs:
        payload = _decode(r.serialized_named_tensors[0])
        if r.load_format == "flattened_bucket":
            from sglang.srt.weight_sync.tensor_bucket import FlattenedTensorBucket

            bucket = FlattenedTensorBucket(flattened_tensor=payload["flattened_tensor"], metadata=payload["metadata"])
            out.append(list(bucket.reconstruct_tensors()))
        else:
            out.append(list(payload))
    return out


MiB = 1 << 20


def _half_mib_tensors(n: int) -> list[tuple[str, Any]]:
    return [
        (f"model.layers.{i}.mlp.down_proj.weight", torch.full((MiB // 4,), float(i), dtype=torch.bfloat16))
        for i in range(n)
    ]


def test_update_weights_from_tensor_sends_buckets_of_at_most_bucket_bytes(
    engine: Any, fake: fake_launch.FakeLaunch
) -> None:
    named = _half_mib_tensors(5)  # 512 KiB each: two per 1 MiB bucket
    assert engine.update_weights_from_tensor(named, bucket_bytes=MiB) == (True, "Success")
    reqs = tm(fake).requests("update_weights_from_tensor")
    fmt = "flattened_bucket" if caps(engine)["update_weights_from_tensor"] == "adapted" else None
    assert [r.load_format for r in reqs] == [fmt] * 3
    assert [r.flush_cache for r in reqs] == [False, False, True]  # one flush, after the last
    sent = _sent_names(engine, reqs)
    assert [[n for n, _ in b] for b in sent] == [[n for n, _ in named[i : i + 2]] for i in (0, 2, 4)]
    given = dict(named)
    for bucket in sent:
        for name, tensor in bucket:
            assert torch.equal(tensor, given[name])


def test_update_weights_from_tensor_stops_at_the_first_failed_bucket(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    tm(fake).tensor_update_results = [(True, "Success"), (False, "bucket 2 refused")]
    assert engine.update_weights_from_tensor(_half_mib_tensors(6), bucket_bytes=MiB) == (False, "bucket 2 refused")
    assert len(tm(fake).requests("update_weights_from_tensor")) == 2  # the third was never sent


def test_update_weights_from_tensor_builds_the_next_bucket_while_one_is_in_flight(
    engine: Any, fake: fake_launch.FakeLaunch, monkeypatch: pytest.MonkeyPatch
) -> None:
    if caps(engine)["update_weights_from_tensor"] != "adapted":
        pytest.skip("no flattened buckets in this release: nothing is built ahead")
    from sglang_roll_compat import weightbuckets

    events: list[str] = []
    real_flatten = weightbuckets.flatten

    def flatten(bucket_cls: Any, bucket: list[tuple[str, Any]]) -> Any:
        events.append(f"built {bucket[0][0].split('.')[2]}")
        return real_flatten(bucket_cls, bucket)

    class Gate:
        async def wait(self) -> None:
            n = len(tm(fake).requests("update_weights_from_tensor")) - 1
            await asyncio.sleep(0.05)  # the engine loading the bucket
            events.append(f"answered {n}")

    monkeypatch.setattr(weightbuckets, "flatten", flatten)
    tm(fake).block = Gate()
    named = _half_mib_tensors(6)  # three buckets: layers 0-1, 2-3, 4-5
    assert engine.update_weights_from_tensor(named, bucket_bytes=MiB) == (True, "Success")
    assert events == ["built 0", "built 2", "answered 0", "built 4", "answered 1", "answered 2"]


def test_bucket_bytes_is_checked_before_anything_is_sent(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    named = _half_mib_tensors(2)
    for bad, error in [(0, ValueError), (1000, ValueError), ("1MiB", TypeError), (True, TypeError)]:
        with pytest.raises(error, match="bucket_bytes"):
            engine.update_weights_from_tensor(named, bucket_bytes=bad)
    with pytest.raises(ValueError, match="bucket_bytes applies to the default format only"):
        engine.update_weights_from_tensor(named, load_format="direct", bucket_bytes=MiB)
    assert tm(fake).requests("update_weights_from_tensor") == []


def test_update_weights_from_tensor_rejects_bad_input(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    t = torch.zeros(1)
    for bad, error in [
        ([], ValueError),
        ([("a", t), ("a", t)], ValueError),
        ([("a", [1, 2])], TypeError),
        ([("", t)], TypeError),
        ([("a", t, t)], TypeError),
        ({"a": t}, TypeError),
    ]:
        with pytest.raises(error):
            engine.update_weights_from_tensor(bad)
    assert tm(fake).requests("update_weights_from_tensor") == []


def test_update_weights_from_distributed(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    ok = engine.update_weights_from_distributed(
        ["a.weight", "b.weight"], [torch.bfloat16, "float32"], [[2, 3], (4,)], flush_cache=False
    )
    assert ok == (True, "Success")
    reqs = tm(fake).requests("update_weights_from_distributed")
    if caps(engine)["update_weights_from_distributed"] == "native":
        (req,) = reqs
        assert (req.names, req.dtypes, req.shapes) == (["a.weight", "b.weight"], ["bfloat16", "float32"], [[2, 3], [4]])
        assert req.flush_cache is False
    else:  # 0.4.6: one request per tensor
        assert [(r.name, r.dtype, r.shape) for r in reqs] == [
            ("a.weight", "bfloat16", [2, 3]),
            ("b.weight", "float32", [4]),
        ]


@pytest.mark.parametrize(
    ("names", "dtypes", "shapes", "error"),
    [
        (["a"], ["float32", "float32"], [[1]], ValueError),
        (["a", "a"], ["float32"] * 2, [[1]] * 2, ValueError),
        (["a"], ["floaty"], [[1]], TypeError),
        (["a"], ["float32"], [[-1]], ValueError),
        ("a", ["float32"], [[1]], TypeError),
        ([], [], [], ValueError),
    ],
)
def test_update_weights_from_distributed_rejects_mismatches(engine: Any, names, dtypes, shapes, error) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error):
        engine.update_weights_from_distributed(names, dtypes, shapes)


def test_weight_update_group_lifecycle(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    assert engine.init_weights_update_group("127.0.0.1", 29500, 1, 2, "g1") == (True, "Success")
    (req,) = tm(fake).requests("init_weights_update_group")
    assert (req.master_address, req.master_port, req.rank_offset, req.world_size, req.group_name, req.backend) == (
        "127.0.0.1",
        29500,
        1,
        2,
        "g1",
        "nccl",
    )
    with pytest.raises(ValueError):
        engine.init_weights_update_group("127.0.0.1", 0, 1, 2, "g1")
    if caps(engine)["destroy_weights_update_group"] == "native":
        assert engine.destroy_weights_update_group("g1") == (True, "Success")
        assert tm(fake).requests("destroy_weights_update_group")[0].group_name == "g1"
    else:
        with pytest.raises(NotImplementedError, match=r"0\.5\.3"):
            engine.destroy_weights_update_group("g1")


# -- memory --------------------------------------------------------------------------------------
def test_release_and_resume_with_tags(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    native = caps(engine)["release_memory_occupation"] == "native"
    if native:
        out = engine.release_memory_occupation(tags=["kv_cache"])
        assert out["released"] == ["kv_cache"]
        again = engine.release_memory_occupation(tags=["kv_cache"])  # safe twice: nothing sent
        assert again["released"] == [] and again["already_released"] == ["kv_cache"]
        reqs = tm(fake).requests("release_memory_occupation")
        assert [r.tags for r in reqs] == [["kv_cache"]]
        engine.resume_memory_occupation(tags=["kv_cache", "weights"])
        (resume,) = tm(fake).requests("resume_memory_occupation")
        assert resume.tags == ["kv_cache"]  # weights were never released
    else:
        with pytest.raises(NotImplementedError, match="no memory tags"):
            engine.release_memory_occupation(tags=["kv_cache"])
        engine.release_memory_occupation()
        engine.resume_memory_occupation()
        assert len(tm(fake).requests("release_memory_occupation")) == 1
    with pytest.raises(ValueError, match="unknown memory tag"):
        engine.release_memory_occupation(tags=["gpu_ram"])
    with pytest.raises(TypeError):
        engine.release_memory_occupation(tags="weights")


def test_release_waits_for_the_memory_to_be_free(fake: fake_launch.FakeLaunch) -> None:
    readings = iter([10_000, 9_000, 2_000, 2_000])
    e = Engine(memory_meter=lambda pids: next(readings), **ARGS)
    try:
        out = e.release_memory_occupation()
        assert out["freed_bytes"] == 8_000
    finally:
        e.shutdown()


def test_release_times_out_clearly_when_memory_stays(fake: fake_launch.FakeLaunch) -> None:
    e = Engine(memory_meter=lambda pids: 10_000, **ARGS)
    e.release_timeout = 0.3
    try:
        with pytest.raises(MemoryReleaseTimeoutError, match="did not drop"):
            e.release_memory_occupation()
    finally:
        e.shutdown()


# -- cache, abort, pause -----------------------------------------------------------------------------
def test_flush_cache_retries_with_a_bound(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    tm(fake).fail_flushes = 2
    assert engine.flush_cache() is True
    assert len(tm(fake).requests("flush_cache")) == 0 and sum(n == "flush_cache" for n, *_ in tm(fake).calls) == 3
    tm(fake).fail_flushes = 100
    with pytest.raises(TimeoutError, match="3 attempts"):
        engine.flush_cache(retries=2)


def test_flush_cache_can_abort_pending_requests_first(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    tm(fake).rid_to_state = {"pending-1": object()}
    engine.flush_cache(abort_pending=True)
    names = [n for n, *_ in tm(fake).calls]
    assert names.index("abort_request") < names.index("flush_cache")


def test_abort_all_and_some(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    manager = tm(fake)
    manager.rid_to_state = {"r1": object(), "r2": object()}
    assert engine.abort() == ["r1", "r2"]
    aborts = [(a, k) for n, a, k in manager.calls if n == "abort_request"]
    if caps(engine)["abort"] == "native":
        assert aborts == [((), {"abort_all": True})]
    else:
        assert aborts == [(("r1",), {}), (("r2",), {})]
    manager.calls.clear()
    assert engine.abort(["r9"]) == ["r9"]
    assert [(a, k) for n, a, k in manager.calls if n == "abort_request"] == [((), {"rid": "r9"})]
    with pytest.raises(ValueError):
        engine.abort([""])


def test_pause_and_continue(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    support = caps(engine)["pause_generation"]
    if support == "unsupported":
        with pytest.raises(NotImplementedError):
            engine.pause_generation()
        return
    engine.pause_generation("abort")
    engine.continue_generation()
    pauses = [a for n, a, _ in tm(fake).calls if n == "pause_generation"]
    if support == "native":
        assert pauses[0][0].mode == "abort"
        engine.pause_generation("retract")
        assert [a for n, a, _ in tm(fake).calls if n == "pause_generation"][-1][0].mode == "retract"
    else:
        assert pauses == [()]
        with pytest.raises(NotImplementedError, match=r"0\.5\.6"):
            engine.pause_generation("retract")
    with pytest.raises(ValueError):
        engine.pause_generation("sideways")


def test_get_server_info(engine: Any) -> None:
    info = engine.get_server_info()
    assert info["version"] == sglang_roll_compat.SELECTION.installed.version
    assert info["max_total_num_tokens"] == 4096


# -- capabilities golden table ------------------------------------------------------------------------
def test_capabilities_match_the_golden_table(engine: Any) -> None:
    version = sglang_roll_compat.SELECTION.installed.version
    golden = json.loads(GOLDEN.read_text())
    current = engine.capabilities()
    if os.environ.get("SGLANG_ROLL_COMPAT_UPDATE_GOLDEN"):
        # sessions of several releases may write their rows at once: read, update and write under a lock
        with open(GOLDEN.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            golden = json.loads(GOLDEN.read_text())
            golden[version] = current
            GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=1, sort_keys=True) + "\n")
    assert version in golden, f"no golden capabilities for {version}: run with SGLANG_ROLL_COMPAT_UPDATE_GOLDEN=1"
    assert current == golden[version]


# -- bad input and lifecycle -----------------------------------------------------------------------------
def test_unknown_server_args_are_refused_before_launch(fake: fake_launch.FakeLaunch) -> None:
    with pytest.raises(ServerArgsError, match="did you mean 'tp_size'"):
        Engine(tp_szie=2, **ARGS)
    with pytest.raises(ServerArgsError, match="mem_fraction_static"):
        Engine(**{**ARGS, "mem_fraction_static": 1.5})
    assert fake.managers == []


def test_calls_after_shutdown_raise_and_shutdown_is_idempotent(fake: fake_launch.FakeLaunch) -> None:
    with Engine(**ARGS) as e:
        pass
    assert e.closed
    e.shutdown()
    with pytest.raises(EngineClosedError):
        e.generate(input_ids=[1])
    with pytest.raises(EngineClosedError):
        e.flush_cache()


def test_shutdown_ends_only_what_sglang_started(fake: fake_launch.FakeLaunch) -> None:
    import psutil

    fake.start_children = 1
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        e = Engine(**ARGS)
        (child,) = fake.children
        assert psutil.pid_exists(child.pid)
        e.shutdown()
        child.join(timeout=10)
        assert child.exitcode is not None  # SGLang's child is gone
        assert bystander.poll() is None  # the trainer's own child is untouched
    finally:
        bystander.kill()
        bystander.wait()


def test_upstream_shutdown_would_kill_the_bystander_too(fake: fake_launch.FakeLaunch) -> None:
    """Control: why the facade does not call upstream's shutdown."""
    bystander = subprocess.Popen(["sleep", "120"])
    e = Engine(**ARGS)
    try:
        e.upstream.shutdown()
        # killed (-9), or killed and reaped by upstream's psutil wait (subprocess then reads 0):
        # either way a `sleep 120` that ends within seconds was ended by upstream's shutdown
        assert bystander.wait(timeout=10) in (-9, 0)
    finally:
        e.shutdown()


def _call_then_kill(call: Any, pid: int) -> tuple[dict[str, Any], float, threading.Thread]:
    """Run ``call`` in a thread, SIGKILL ``pid`` while it waits, and wait up to 10 s for it:
    returns what it raised (and when), the moment of the kill, and the thread."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # recorded for the caller's assertions
            outcome["error"] = exc
            outcome["at"] = time.monotonic()

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(0.5)
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=10)
    return outcome, killed_at, worker


def test_a_child_killed_mid_call_fails_the_call_within_5s(fake: fake_launch.FakeLaunch) -> None:
    import psutil

    fake.start_children = 1
    e = Engine(**ARGS)
    (child,) = fake.children
    fake.managers[-1].block = asyncio.Event()  # the request never completes on its own
    outcome, killed_at, worker = _call_then_kill(lambda: e.generate(input_ids=[1]), child.pid)
    assert not worker.is_alive()
    assert isinstance(outcome["error"], EngineDeadError)
    assert outcome["at"] - killed_at < 5.0
    assert "exited with code -9" in str(outcome["error"])
    with pytest.raises(EngineDeadError):
        e.flush_cache()
    started = time.monotonic()
    e.shutdown()
    assert time.monotonic() - started < 10
    assert child.pid not in {c.pid for c in psutil.Process().children(recursive=True)}


def test_a_child_killed_fails_a_pending_async_call_and_shutdown_drops_the_listener(
    fake: fake_launch.FakeLaunch,
) -> None:
    """The async variant awaited in the caller's own loop (a Ray async actor, say) is cancelled
    through that loop; the facade's one death listener goes away with shutdown()."""
    fake.start_children = 1
    e = Engine(**ARGS)
    (child,) = fake.children
    fake.managers[-1].block = asyncio.Event()
    ctx = e._death
    assert ctx is not None and len(ctx._listeners) == 1  # one per facade, not one per call
    outcome: dict[str, Any] = {}

    async def calls() -> None:
        waiting = [asyncio.ensure_future(e.async_generate(input_ids=[i])) for i in range(3)]
        done = await asyncio.gather(*waiting, return_exceptions=True)
        outcome["errors"] = done
        outcome["cancelled_caller"] = asyncio.current_task().cancelling() if hasattr(asyncio.Task, "cancelling") else 0

    worker = threading.Thread(target=asyncio.run, args=(calls(),))
    worker.start()
    time.sleep(0.5)
    assert len(e._inflight) == 3
    os.kill(child.pid, signal.SIGKILL)
    worker.join(timeout=10)
    assert not worker.is_alive()
    assert [type(x) for x in outcome["errors"]] == [EngineDeadError] * 3
    assert outcome["cancelled_caller"] == 0
    assert not e._inflight
    e.shutdown()
    assert ctx._listeners == []


# -- generation from text ------------------------------------------------------------------------
def test_generate_from_a_prompt_sends_text(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    manager = tm(fake)
    before = list(manager.calls)
    for bad in ({"prompt": "hello", "input_ids": [1, 2]}, {}):
        with pytest.raises(ValueError, match="exactly one"):
            engine.generate(**bad)
    assert manager.calls == before  # refused before anything reached the tokenizer manager
    out = engine.generate(prompt="hello", sampling_params={"max_new_tokens": 2}, return_logprob=True)
    assert out["output_ids"] == [7, 8, 9]
    (req,) = manager.requests("generate_request")
    assert type(req).__name__ == "GenerateReqInput"
    assert req.text == "hello" and req.input_ids is None
    assert req.return_logprob is True and req.sampling_params == {"max_new_tokens": 2}


# -- the async variants send what the sync methods send ------------------------------------------
def _no_meter(pids: Any) -> None:
    return None  # no GPU memory to watch: release_memory_occupation returns at once


def _snapshot(obj: Any) -> Any:
    """A request object as (class, fields); anything else as it is."""
    cls = type(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        names: Any = [f.name for f in dataclasses.fields(obj)]
    elif hasattr(cls, "__struct_fields__"):  # msgspec structs (0.5.x io_struct)
        names = cls.__struct_fields__
    else:
        return obj
    return (cls.__module__, cls.__qualname__, {n: getattr(obj, n) for n in names})


def _sent(manager: fake_launch.FakeTokenizerManager) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    return [(name, tuple(_snapshot(a) for a in args), kwargs) for name, args, kwargs in manager.calls]


def _facade_steps(support: dict[str, str]) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    """(method, args, kwargs) for every call under test, limited to what the release supports."""
    steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("flush_cache", (), {}),
        ("flush_cache", (), {"abort_pending": True}),
        ("init_weights_update_group", ("127.0.0.1", 29500, 1, 2, "g1"), {}),
        (
            "update_weights_from_distributed",
            (["a.weight", "b.weight"], [torch.bfloat16, "float32"], [[2, 3], (4,)]),
            {"flush_cache": False},
        ),
    ]
    if support["destroy_weights_update_group"] != "unsupported":
        steps.append(("destroy_weights_update_group", ("g1",), {}))
    if support["release_memory_occupation"] == "native":  # tags: part first, then the rest
        steps.append(("release_memory_occupation", (), {"tags": ["kv_cache"]}))
    steps += [("release_memory_occupation", (), {}), ("resume_memory_occupation", (), {})]
    if support["pause_generation"] != "unsupported":
        steps += [("pause_generation", (), {}), ("continue_generation", (), {})]
    steps += [("abort", (), {}), ("abort", (["r9", "r10"],), {})]
    return steps


PENDING = {"r1": None, "r2": None}


def test_async_variants_send_the_same_requests_as_the_sync_methods(fake: fake_launch.FakeLaunch) -> None:
    sync_engine = Engine(memory_meter=_no_meter, **ARGS)
    try:
        support = caps(sync_engine)
        steps = _facade_steps(support)
        sync_manager = tm(fake)
        sync_manager.rid_to_state = dict(PENDING)
        sync_results = [getattr(sync_engine, name)(*args, **kwargs) for name, args, kwargs in steps]
    finally:
        sync_engine.shutdown()
    sync_sent = _sent(sync_manager)
    sent_names = {name for name, *_ in sync_sent}
    assert {
        "flush_cache",
        "abort_request",
        "init_weights_update_group",
        "update_weights_from_distributed",
    } <= sent_names
    assert {"release_memory_occupation", "resume_memory_occupation"} <= sent_names

    async def actor() -> tuple[fake_launch.FakeTokenizerManager, list[Any]]:
        e = Engine(memory_meter=_no_meter, **ARGS)  # the async methods run on the loop that made the engine
        try:
            manager = tm(fake)
            assert manager is not sync_manager
            manager.rid_to_state = dict(PENDING)
            results = [await getattr(e, f"async_{name}")(*args, **kwargs) for name, args, kwargs in steps]
            return manager, results
        finally:
            e.shutdown()

    async_manager, async_results = asyncio.run(actor())
    assert _sent(async_manager) == sync_sent
    assert async_results == sync_results


# -- shutdown at interpreter exit ------------------------------------------------------------------
EXIT_SCRIPT = r"""
import atexit, json, sys
import pytest, psutil
import fake_launch, helpers

fake = fake_launch.install(pytest.MonkeyPatch())
fake.start_children = 1
from sglang_roll_compat import Engine

holder = {}

def probe():
    # registered before the engine, so (atexit is LIFO) it runs after the engine's own exit hook
    # and before multiprocessing's, which would otherwise end a daemonic child by itself
    (child,) = fake.children
    print("PROBE " + json.dumps({"closed": holder["engine"].closed, "child_alive": child.is_alive()}), flush=True)

atexit.register(probe)
holder["engine"] = Engine(**helpers.engine_args())
(child,) = fake.children
print("CHILD " + json.dumps({"pid": child.pid, "created": psutil.Process(child.pid).create_time()}), flush=True)
"""


def _tagged(text: str, tag: str) -> dict[str, Any] | None:
    for line in text.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])  # type: ignore[no-any-return]
    return None


def _running(pid: int, created: float) -> bool:
    import psutil

    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_engine_left_open_is_shut_down_at_interpreter_exit(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(package_parent()), str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    )
    env["SGLANG_ROLL_COMPAT_CACHE_DIR"] = str(tmp_path / "cache")
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    child: dict[str, Any] | None = None
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-c", EXIT_SCRIPT], stdout=out, stderr=err, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 240  # importing SGLang and building the engine
        while child is None and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            child = _tagged(out_path.read_text(), "CHILD")
        assert child is not None, f"the engine did not come up\n{err_path.read_text()[-4000:]}"
        up_at = time.monotonic()
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the interpreter hung at exit\n{err_path.read_text()[-4000:]}")
        exit_seconds = time.monotonic() - up_at
        stdout = out_path.read_text()
        assert code == 0, f"exit code {code}\n{err_path.read_text()[-4000:]}"
        assert exit_seconds < 60
        # the facade's exit hook shut the engine down and ended SGLang's child itself
        assert _tagged(stdout, "PROBE") == {"closed": True, "child_alive": False}, err_path.read_text()[-4000:]
        gone_by = time.monotonic() + 10
        while _running(child["pid"], child["created"]) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not _running(child["pid"], child["created"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if child is not None and _running(child["pid"], child["created"]):
            os.kill(child["pid"], signal.SIGKILL)


def test_a_child_killed_interrupts_a_pending_call_of_the_raw_upstream_engine(fake: fake_launch.FakeLaunch) -> None:
    """Frameworks that call SGLang's own Engine (ROLL does) get no SIGQUIT kill-tree under the
    shim; a call waiting on a dead engine must not hang either: it is cancelled, with the death
    message, through the request path every upstream call takes (auto_create_handle_loop)."""
    fake.start_children = 1
    e = Engine(**ARGS)
    raw = e.upstream
    (child,) = fake.children
    fake.managers[-1].block = asyncio.Event()  # the request never completes on its own

    def call() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())  # as a framework's worker thread would
        raw.generate(input_ids=[1], sampling_params={"max_new_tokens": 1})

    outcome, killed_at, worker = _call_then_kill(call, child.pid)
    try:
        assert not worker.is_alive(), "the raw upstream call hung after its engine died"
        assert isinstance(outcome["error"], asyncio.CancelledError)
        assert "the engine died" in str(outcome["error"]) and "exited with code -9" in str(outcome["error"])
        assert outcome["at"] - killed_at < 5.0
        # a raw call made after the death fails at once (on two H200s it waited forever)
        late: dict[str, Any] = {}

        def late_call() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            try:
                raw.update_weights_from_tensor([("model.norm.weight", torch.ones(2))], load_format="direct")
            except BaseException as exc:  # recorded for the assertions below
                late["error"] = exc

        after = threading.Thread(target=late_call)
        after.start()
        after.join(timeout=5)
        assert not after.is_alive(), "a raw call on a dead engine hung"
        assert isinstance(late["error"], EngineDeadError) and "exited with code -9" in str(late["error"])
    finally:
        e.shutdown()


class _OnGpu(torch.Tensor):
    """A CPU tensor that reports a CUDA device (this machine has none): enough for the device
    check, which runs before anything is serialized for the scheduler."""

    gpu = 0

    @property
    def device(self) -> Any:  # type: ignore[override]
        return torch.device("cuda", type(self).gpu)


class _OnGpu1(_OnGpu):
    gpu = 1


def _on_gpu(tensor: Any, gpu: int) -> Any:
    return tensor.as_subclass(_OnGpu1 if gpu == 1 else _OnGpu)


def test_tensors_on_another_gpu_are_refused_before_anything_is_sent(fake: fake_launch.FakeLaunch) -> None:
    """On two H200s a tensor on cuda:0 handed to an engine on cuda:1 (or to a tp=2 engine) made
    the scheduler fail with "CUDA error: invalid argument" and the engine die."""
    with Engine(**ARGS) as e:  # base_gpu_id 0
        tm = fake.managers[-1]
        before = len(tm.calls)
        with pytest.raises(ValueError, match=r"engine runs on cuda:0"):
            e.update_weights_from_tensor([("model.norm.weight", _on_gpu(torch.ones(2), 1))])
        assert len(tm.calls) == before
        assert e.update_weights_from_tensor([("model.norm.weight", _on_gpu(torch.ones(2), 0))], load_format="direct")[0]
    with Engine(**{**ARGS, "tp_size": 2}) as e2:
        tm2 = fake.managers[-1]
        before = len(tm2.calls)
        with pytest.raises(ValueError, match=r"tp_size=2.*CPU tensors"):
            e2.update_weights_from_tensor([("model.norm.weight", _on_gpu(torch.ones(2), 0))])
        assert len(tm2.calls) == before
        assert e2.update_weights_from_tensor([("model.norm.weight", torch.ones(2))], load_format="direct")[0]
