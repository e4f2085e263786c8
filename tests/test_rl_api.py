"""The rest of the RL-facing API (sglang_roll_compat/facade_rl.py) against the REAL upstream Engine
class and request classes of this session's release, with only the launch boundary faked
(tests/fake_launch.py): each method sends the release's own request with the right fields, or
refuses before anything is sent, naming the first supported release that has it."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

import fake_launch
import pytest
from fake_launch import tm
from helpers import engine_args

from sglang_roll_compat import Engine
from sglang_roll_compat.capabilities import FIRST_RELEASE

pytestmark = pytest.mark.sglang
torch = pytest.importorskip("torch")

ARGS = engine_args()


@pytest.fixture
def engine(fake: fake_launch.FakeLaunch) -> Any:
    e = Engine(**ARGS)
    yield e
    e.shutdown()


def support(engine: Any, name: str) -> str:
    return str(engine.capabilities()[name]["support"])


def sent(fake: fake_launch.FakeLaunch) -> list[str]:
    return [name for name, *_ in tm(fake).calls]


def _refused(engine: Any, fake: fake_launch.FakeLaunch, feature: str, call: Any) -> None:
    before = list(sent(fake))
    with pytest.raises(NotImplementedError, match=re.escape(f"SGLang {FIRST_RELEASE[feature]}")):
        call()
    assert sent(fake) == before, "a refused call must send nothing"


# -- weights from disk, reading them back, versions ---------------------------------------------
def test_update_weights_from_disk(engine: Any, fake: fake_launch.FakeLaunch, tmp_path: Path) -> None:
    assert engine.update_weights_from_disk(str(tmp_path)) == (True, "Succeeded to update model weights.")
    (req,) = tm(fake).requests("update_weights_from_disk")
    assert type(req).__name__ == "UpdateWeightFromDiskReqInput"
    assert req.model_path == str(tmp_path)
    assert ARGS["load_format"] == "dummy" and req.load_format == "auto"  # the dummy loader reads no files
    engine.update_weights_from_disk(tmp_path, load_format="safetensors")
    assert tm(fake).requests("update_weights_from_disk")[-1].load_format == "safetensors"


def test_update_weights_from_disk_waits_for_an_idle_scheduler_first(
    engine: Any, fake: fake_launch.FakeLaunch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SGLang's scheduler asserts that its flush after the load worked, and a request that has just
    returned can still sit in its running batch: the CPU engine of 0.5.2 lost its scheduler so.
    The facade flushes first, retried while the scheduler refuses (bounded)."""
    tm(fake).fail_flushes = 2
    assert engine.update_weights_from_disk(str(tmp_path))[0]
    assert sent(fake)[-4:] == ["flush_cache"] * 3 + ["update_weights_from_disk"]
    engine.flush_retries, tm(fake).fail_flushes = 1, 100
    with caplog.at_level(logging.WARNING, logger="sglang_roll_compat"):
        assert engine.update_weights_from_disk(str(tmp_path))[0]  # upstream decides; the log says why it may fail
    assert sent(fake)[-3:] == ["flush_cache"] * 2 + ["update_weights_from_disk"]
    assert "still has requests running" in caplog.text


def test_update_weights_from_disk_refuses_bad_input_before_sending(
    engine: Any, fake: fake_launch.FakeLaunch, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        engine.update_weights_from_disk(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"unknown load_format 'safetensor'"):
        engine.update_weights_from_disk(str(tmp_path), load_format="safetensor")
    with pytest.raises(TypeError):
        engine.update_weights_from_disk("")
    assert tm(fake).requests("update_weights_from_disk") == []


def test_get_weights_by_name(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    assert engine.get_weights_by_name("lm_head.weight", truncate_size=3) == [[0.5, 1.5]]
    (req,) = tm(fake).requests("get_weights_by_name")
    assert type(req).__name__ == "GetWeightsByNameReqInput"
    assert (req.name, req.truncate_size) == ("lm_head.weight", 3)
    with pytest.raises(LookupError, match=r"no\.such\.weight"):  # upstream answers None
        engine.get_weights_by_name("no.such.weight")
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="truncate_size"):
            engine.get_weights_by_name("lm_head.weight", truncate_size=bad)
    assert len(tm(fake).requests("get_weights_by_name")) == 2


def test_weight_version_on_every_weight_update(engine: Any, fake: fake_launch.FakeLaunch, tmp_path: Path) -> None:
    named = [("model.norm.weight", torch.ones(2))]
    if support(engine, "update_weight_version") == "unsupported":  # 0.4.x: no weight versions
        _refused(engine, fake, "weight_version", lambda: engine.update_weights_from_tensor(named, weight_version="v1"))
        _refused(
            engine, fake, "weight_version", lambda: engine.update_weights_from_disk(str(tmp_path), weight_version="v1")
        )
        _refused(engine, fake, "weight_version", engine.get_weight_version)
        return
    assert engine.get_weight_version() in (None, "default")
    assert engine.update_weights_from_tensor(named, weight_version="v1")[0]
    assert {r.weight_version for r in tm(fake).requests("update_weights_from_tensor")} == {"v1"}
    assert engine.get_weight_version() == "v1"
    engine.update_weights_from_distributed(["a"], ["bfloat16"], [[2]], weight_version="v2")
    assert tm(fake).requests("update_weights_from_distributed")[-1].weight_version == "v2"
    assert engine.get_weight_version() == "v2"
    engine.update_weights_from_disk(str(tmp_path), weight_version="v3")
    assert tm(fake).requests("update_weights_from_disk")[-1].weight_version == "v3"
    assert engine.get_weight_version() == "v3"
    engine.update_weight_version("v4")
    assert engine.get_weight_version() == "v4"
    with pytest.raises(TypeError, match="weight_version"):
        engine.update_weights_from_tensor(named, weight_version=4)


def test_update_weights_from_ipc(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    handles = {"GPU-0": "ipc:///tmp/ckpt-engine-0.sock"}
    if support(engine, "update_weights_from_ipc") == "unsupported":
        _refused(engine, fake, "update_weights_from_ipc", lambda: engine.update_weights_from_ipc(handles))
        return
    assert engine.update_weights_from_ipc(handles, flush_cache=False) == (True, "Success")
    (req,) = tm(fake).requests("update_weights_from_ipc")
    assert type(req).__name__ == "UpdateWeightsFromIPCReqInput"
    assert req.zmq_handles == handles and req.flush_cache is False
    for bad in ({}, {"GPU-0": ""}, [("GPU-0", "ipc://x")]):
        with pytest.raises(TypeError):
            engine.update_weights_from_ipc(bad)
    assert len(tm(fake).requests("update_weights_from_ipc")) == 1


def test_begin_and_end_weight_update(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    with pytest.raises(RuntimeError, match="no weight-update session is open"):
        engine.end_weight_update()
    assert engine.begin_weight_update()[0] is True
    with pytest.raises(RuntimeError, match="already open"):
        engine.begin_weight_update()
    assert engine.end_weight_update()[0] is True
    if support(engine, "begin_weight_update") == "native":
        (begin,) = tm(fake).requests("begin_weight_update")
        assert type(begin).__name__ == "BeginWeightUpdateReqInput" and begin.selector == "all"
        assert [type(r).__name__ for r in tm(fake).requests("end_weight_update")] == ["EndWeightUpdateReqInput"]
    else:  # every update is final as it loads: nothing to send
        assert "begin_weight_update" not in sent(fake) and "end_weight_update" not in sent(fake)
        with pytest.raises(NotImplementedError, match=r"0\.5\.21"):
            engine.begin_weight_update(selector="draft")


# -- LoRA ---------------------------------------------------------------------------------------------
LORA_ARGS = {"enable_lora": True, "max_lora_rank": 8, "lora_target_modules": ["q_proj", "v_proj"]}


def test_lora_needs_a_release_that_has_it_and_an_engine_with_lora(
    engine: Any, fake: fake_launch.FakeLaunch, tmp_path: Path
) -> None:
    if support(engine, "load_lora_adapter") == "unsupported":
        _refused(engine, fake, "load_lora_adapter", lambda: engine.load_lora_adapter("a", str(tmp_path)))
        _refused(engine, fake, "unload_lora_adapter", lambda: engine.unload_lora_adapter("a"))
        return
    with pytest.raises(ValueError, match="LoRA is not enabled"):
        engine.load_lora_adapter("a", str(tmp_path))
    assert "load_lora_adapter" not in sent(fake)


def _lora_engine(engine_cls: Any = Engine) -> Any:
    from sglang_roll_compat.serverargs import field_names

    fields = field_names()
    extra: dict[str, Any] = {k: v for k, v in LORA_ARGS.items() if k in fields}
    at_start = _loras_at_start()
    if at_start:
        extra["lora_paths"] = at_start
    return engine_cls(**ARGS, **extra)


def _loras_at_start() -> dict[str, str]:
    """The adapters a LoRA engine is started with: none, but on releases without enable_lora
    (0.4.9 … 0.4.9.post2) LoRA is on only with adapters named at start."""
    from sglang_roll_compat.serverargs import field_names

    return {} if "enable_lora" in field_names() else {"base": "/base-adapter"}


def test_lora_adapters_load_unload_and_generate_checks(fake: fake_launch.FakeLaunch, tmp_path: Path) -> None:
    engine = _lora_engine()
    at_start = sorted(_loras_at_start())
    try:
        if support(engine, "load_lora_adapter") == "unsupported":
            pytest.skip("no LoRA adapters in this release (the refusal is tested above)")
        assert engine.lora_adapters == at_start
        assert engine.load_lora_adapter("sql", str(tmp_path)) == (True, "Success")
        (req,) = tm(fake).requests("load_lora_adapter")
        assert type(req).__name__ == "LoadLoRAAdapterReqInput"
        assert (req.lora_name, req.lora_path) == ("sql", str(tmp_path))
        assert engine.lora_adapters == sorted([*at_start, "sql"])
        with pytest.raises(ValueError, match="loaded already"):
            engine.load_lora_adapter("sql", str(tmp_path))
        engine.generate(input_ids=[1, 2], lora_path="sql")
        assert tm(fake).requests("generate_request")[-1].lora_path == "sql"
        n = len(tm(fake).requests("generate_request"))
        with pytest.raises(ValueError, match=r"\['chat'\] are not loaded"):
            engine.generate(input_ids=[[1], [2]], lora_path=["sql", "chat"])
        with pytest.raises(ValueError, match="no LoRA adapter named 'chat'"):
            engine.unload_lora_adapter("chat")
        assert engine.unload_lora_adapter("sql")[0] is True
        assert tm(fake).requests("unload_lora_adapter")[-1].lora_name == "sql"
        with pytest.raises(ValueError, match="not loaded"):
            engine.generate(input_ids=[1], lora_path="sql")
        assert len(tm(fake).requests("generate_request")) == n, "a refused generate must send nothing"
    finally:
        engine.shutdown()


def test_lora_adapter_from_tensors(fake: fake_launch.FakeLaunch) -> None:
    from sglang.srt.entrypoints.engine import MultiprocessingSerializer

    engine = _lora_engine()
    try:
        tensors = {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.ones(8, 4)}
        config = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}
        if support(engine, "load_lora_adapter_from_tensors") == "unsupported":
            call = lambda: engine.load_lora_adapter_from_tensors("t", tensors, config)  # noqa: E731
            _refused(engine, fake, "load_lora_adapter_from_tensors", call)
            return
        with pytest.raises(ValueError, match="PEFT config"):
            engine.load_lora_adapter_from_tensors("t", tensors, {"lora_alpha": 16})
        with pytest.raises(TypeError, match=r"torch\.Tensor"):
            engine.load_lora_adapter_from_tensors("t", {"w": [1.0]}, config)
        assert engine.load_lora_adapter_from_tensors("t", tensors, config)[0] is True
        (req,) = tm(fake).requests("load_lora_adapter_from_tensors")
        assert req.lora_name == "t" and req.config_dict == config
        payloads = getattr(req, "serialized_named_tensors", None) or [req.serialized_tensors]
        ((name, value),) = MultiprocessingSerializer.deserialize(payloads[0]).items()
        assert name in tensors and torch.equal(value, tensors[name])
        engine.generate(input_ids=[1], lora_path="t")
    finally:
        engine.shutdown()


# -- sessions -----------------------------------------------------------------------------------------
def test_sessions_open_generate_close(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    sid = engine.open_session(1024, session_id="turns-1")
    assert sid == "turns-1"
    (req,) = tm(fake).requests("open_session")
    assert type(req).__name__ == "OpenSessionReqInput" and req.capacity_of_str_len == 1024
    with pytest.raises(ValueError, match="open already"):
        engine.open_session(1024, session_id="turns-1")
    engine.generate(input_ids=[1, 2], session_id=sid)
    gen = tm(fake).requests("generate_request")[-1]
    assert type(gen).__name__ == "GenerateReqInput" and gen.session_params == {"id": "turns-1"}
    with pytest.raises(ValueError, match="no session 'other'"):
        engine.generate(input_ids=[1], session_id="other")
    engine.close_session(sid)
    assert [r.session_id for r in tm(fake).requests("close_session")] == ["turns-1"]
    with pytest.raises(ValueError, match="no session 'turns-1'"):
        engine.close_session(sid)
    with pytest.raises(ValueError, match="capacity_of_str_len"):
        engine.open_session(0)


# -- profiler, embeddings, scores ------------------------------------------------------------------
def test_start_and_stop_profile(engine: Any, fake: fake_launch.FakeLaunch, tmp_path: Path) -> None:
    engine.start_profile(output_dir=str(tmp_path), num_steps=2, activities=["CPU"])
    _, args, kwargs = [c for c in tm(fake).calls if c[0] == "start_profile"][-1]
    got = {k: getattr(args[0], k) for k in ("output_dir", "num_steps", "activities")} if args else kwargs
    assert got == {"output_dir": str(tmp_path), "num_steps": 2, "activities": ["CPU"]}
    engine.stop_profile()
    assert sent(fake)[-1] == "stop_profile"
    with pytest.raises(ValueError, match="activities"):
        engine.start_profile(activities=["TPU"])
    with pytest.raises(NotImplementedError, match="takes no"):
        engine.start_profile(no_such_option=1)


def test_encode(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    assert engine.encode("hello")["embedding"] == [0.25, 0.5]
    req = tm(fake).requests("generate_request")[-1]
    assert type(req).__name__ == "EmbeddingReqInput" and req.text == "hello"
    with pytest.raises(ValueError, match="exactly one"):
        engine.encode()


def test_score(engine: Any, fake: fake_launch.FakeLaunch) -> None:
    if support(engine, "score") == "unsupported":
        _refused(engine, fake, "score", lambda: engine.score("q", ["a"], [1, 2]))
        return
    assert engine.score("Is it good?", [" yes", " no"], [11, 12], apply_softmax=True) == [[0.25, 0.75]] * 2
    (_, _, kwargs) = [c for c in tm(fake).calls if c[0] == "score_request"][-1]
    assert kwargs["query"] == "Is it good?" and kwargs["label_token_ids"] == [11, 12] and kwargs["apply_softmax"]
    with pytest.raises(TypeError, match="like the query"):
        engine.score("q", [[1, 2]], [1])
    with pytest.raises(ValueError, match="label_token_ids"):
        engine.score("q", ["a"], [])


def test_async_variants_send_the_same_requests(fake: fake_launch.FakeLaunch, tmp_path: Path) -> None:
    steps: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
        ("update_weights_from_disk", (str(tmp_path),), {}),
        ("get_weights_by_name", ("lm_head.weight",), {}),
        ("open_session", (64,), {"session_id": "s"}),
        ("generate", (), {"input_ids": [1], "session_id": "s"}),
        ("close_session", ("s",), {}),
        ("start_profile", (), {"num_steps": 1}),
        ("stop_profile", (), {}),
        ("encode", ("x",), {}),
        ("begin_weight_update", (), {}),
        ("end_weight_update", (), {}),
    ]

    def shapes(manager: fake_launch.FakeTokenizerManager) -> list[Any]:
        return [(n, [repr(a) for a in args], sorted(kw)) for n, args, kw in manager.calls]

    engine = Engine(**ARGS)
    try:
        sync_results = [getattr(engine, name)(*a, **kw) for name, a, kw in steps]
        sync_calls = shapes(tm(fake))
    finally:
        engine.shutdown()

    async def actor() -> tuple[list[Any], list[Any]]:
        e = Engine(**ARGS)
        try:
            results = [await getattr(e, f"async_{name}")(*a, **kw) for name, a, kw in steps]
            return results, shapes(tm(fake))
        finally:
            e.shutdown()

    async_results, async_calls = asyncio.run(actor())
    assert json.dumps(async_results, default=str) == json.dumps(sync_results, default=str)
    assert async_calls == sync_calls
