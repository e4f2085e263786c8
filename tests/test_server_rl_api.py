"""Server mode for the rest of the RL-facing API (facade_rl.py): every method reaches its endpoint
with this release's request schema (tests/fake_server.py serves only the routes the release's real
http_server.py declares), or is refused before any request where the release lacks it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from test_server_engine import records, release_routes, start

from sglang_roll_compat import ServerEngine
from sglang_roll_compat.capabilities import FIRST_RELEASE

pytestmark = pytest.mark.sglang
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server-rl")


@pytest.fixture(scope="module")
def server(shared_dir: Path) -> Any:
    from sglang_roll_compat.serverargs import field_names

    lora = {"enable_lora": True, "max_lora_rank": 8, "lora_target_modules": ["q_proj"]}
    fields = field_names()
    extra: dict[str, Any] = {k: v for k, v in lora.items() if k in fields}
    if "enable_lora" not in fields:  # 0.4.9 … 0.4.9.post2: LoRA is on only with adapters named at start
        extra["lora_paths"] = {"base": str(shared_dir)}
    engine = start(shared_dir, **extra)
    yield engine
    engine.shutdown()


def bodies(shared_dir: Path, path: str) -> list[dict[str, Any]]:
    return [r["body"] for r in records(shared_dir) if r["path"] == path]


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_every_rl_method_reaches_its_endpoint_or_is_refused(server: ServerEngine, shared_dir: Path) -> None:
    caps = {k: v["support"] for k, v in server.capabilities().items()}
    routes = release_routes()
    assert server.update_weights_from_disk(str(shared_dir))[0] is True
    assert bodies(shared_dir, "/update_weights_from_disk")[-1]["model_path"] == str(shared_dir)
    assert server.get_weights_by_name("lm_head.weight", 1) == [[0.5, 1.5]]
    assert bodies(shared_dir, "/get_weights_by_name")[-1] == {"name": "lm_head.weight", "truncate_size": 1}

    sid = server.open_session(256)
    server.generate(input_ids=[1], session_id=sid)
    assert bodies(shared_dir, "/generate")[-1]["session_params"] == {"id": sid}
    server.close_session(sid)
    assert bodies(shared_dir, "/close_session")[-1] == {"session_id": sid}

    server.start_profile(num_steps=3)
    server.stop_profile()
    assert bodies(shared_dir, "/start_profile")[-1] == {"num_steps": 3}
    assert server.encode("hi")["embedding"] == [0.25, 0.5]
    assert bodies(shared_dir, "/encode")[-1] == {"text": "hi"}

    if caps["score"] != "unsupported":
        assert server.score("q", ["a", "b"], [3]) == [[0.25, 0.75]] * 2
    else:
        with pytest.raises(NotImplementedError, match=re.escape(FIRST_RELEASE["score"])):
            server.score("q", ["a"], [3])

    if caps["update_weight_version"] != "unsupported":
        server.update_weights_from_disk(str(shared_dir), weight_version="w1")
        assert bodies(shared_dir, "/update_weights_from_disk")[-1]["weight_version"] == "w1"
        assert server.get_weight_version() == "w1"
        server.update_weight_version("w2")
        assert server.get_weight_version() == "w2"
    else:
        with pytest.raises(NotImplementedError, match=re.escape(FIRST_RELEASE["weight_version"])):
            server.update_weights_from_disk(str(shared_dir), weight_version="w1")

    if caps["load_lora_adapter"] != "unsupported":
        assert server.load_lora_adapter("sql", str(shared_dir))[0] is True
        assert bodies(shared_dir, "/load_lora_adapter")[-1]["lora_name"] == "sql"
        with pytest.raises(ValueError, match="not loaded"):
            server.generate(input_ids=[1], lora_path="chat")
        assert server.unload_lora_adapter("sql")[0] is True
    if caps["update_weights_from_ipc"] != "unsupported":
        assert server.update_weights_from_ipc({"GPU-0": "ipc:///tmp/x"})[0] is True
        assert bodies(shared_dir, "/update_weights_from_ipc")[-1]["zmq_handles"] == {"GPU-0": "ipc:///tmp/x"}

    server.begin_weight_update()
    server.end_weight_update()
    if caps["begin_weight_update"] == "native":
        assert bodies(shared_dir, "/begin_weight_update")[-1] == {"selector": "all"}
    else:
        assert "/begin_weight_update" not in {r["path"] for r in records(shared_dir, "received")}

    # a method the release's server has no route for is refused before any request
    for name, cap in server.capabilities().items():
        if cap["support"] == "unsupported" and name in FIRST_RELEASE:
            assert cap["note"], name
    received = {r["path"] for r in records(shared_dir, "received")}
    assert received <= routes | {"/health"}, received - routes


def test_an_adapter_server_someone_else_started_is_not_checked(server: ServerEngine) -> None:
    other = ServerEngine.connect(server.url, tp_size=2)
    try:
        assert other.lora_adapters is None  # its adapters are not known here: the server decides
    finally:
        other.shutdown()


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_verify_weights_over_http(server: ServerEngine, shared_dir: Path) -> None:
    """The same fingerprints and fetched slices as JSON: CPU tensors are fine here (nothing but
    fingerprints is sent)."""
    import weights_reference as ref

    assert server.capabilities()["verify_weights"]["support"] == "adapted"
    hf = ref.hf_tensors(seed=0)
    report = server.verify_weights(list(hf.items()))
    assert report.complete, str(report)
    name = "model.layers.0.mlp.up_proj.weight"
    wrong = {**hf, name: hf[name] * 0.5}
    report = server.verify_weights(list(wrong.items()))
    assert [m.name for m in report.mismatched] == [name]
    assert report.mismatched[0].max_abs_diff == pytest.approx(float(hf[name].abs().max() * 0.5), rel=0.02)
    assert all(b["name"].startswith("__sglang_roll_compat") for b in bodies(shared_dir, "/get_weights_by_name")[-3:])
