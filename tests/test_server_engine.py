"""Server mode: the facade over SGLang's HTTP server, against a stand-in server built from this
release's real request schemas (tests/fake_server.py) running as a real subprocess on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sglang_roll_compat import EngineDeadError, EngineLaunchError, ServerEngine
from sglang_roll_compat.engine import capabilities
from sglang_roll_compat.facade_rl import SENDS_NOTHING_WHEN_ADAPTED
from sglang_roll_compat.models import tiny_model_path
from sglang_roll_compat.server import ServerResponseError, endpoint, port_in_use, server_routes

pytestmark = pytest.mark.sglang
torch = pytest.importorskip("torch")

HERE = Path(__file__).parent
ARGS = dict(model_path=tiny_model_path(), load_format="dummy", skip_tokenizer_init=True, tp_size=2)


def start(tmp_path: Path, scenario: str = "healthy", **kwargs: Any) -> ServerEngine:
    os.environ["SGLANG_ROLL_COMPAT_CACHE_DIR"] = str(tmp_path / "cache")
    command = [sys.executable, str(HERE / "fake_server.py"), "{spec}", scenario, str(tmp_path)]
    startup_timeout = kwargs.pop("startup_timeout", 60)
    return ServerEngine(command=command, startup_timeout=startup_timeout, **{**ARGS, **kwargs})


def records(tmp_path: Path, name: str = "requests") -> list[dict[str, Any]]:
    """The requests the fake server accepted (``received``: every request that reached it)."""
    path = tmp_path / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def release_routes() -> frozenset[str]:
    routes = server_routes()
    assert routes is not None, "the routes of this release's http_server.py could not be read"
    return routes


NO_ROUTE = "this release's HTTP server has no "


def _sends_nothing(name: str, cap: dict[str, str]) -> bool:
    return cap["support"] == "adapted" and name in SENDS_NOTHING_WHEN_ADAPTED


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def server(shared_dir: Path) -> Any:
    engine = start(shared_dir)
    yield engine
    engine.shutdown()


def test_every_method_reaches_its_endpoint_with_the_release_schema(server: ServerEngine, shared_dir: Path) -> None:
    caps = server.capabilities()
    assert server.generate(input_ids=[1, 2], sampling_params={"max_new_tokens": 2})["output_ids"] == [7, 8, 9]
    named = [("lm_head.weight", torch.ones(2, 2, dtype=torch.bfloat16)), ("model.norm.weight", torch.ones(2))]
    with pytest.raises(ValueError, match="CUDA device"):  # CPU tensors cannot cross into the server
        server.update_weights_from_tensor(named)
    fake_cuda = [(name, FakeCudaTensor(t)) for name, t in named]
    with pytest.raises(ValueError, match="tp_size=2"):  # one GPU's tensors cannot feed two ranks
        server.update_weights_from_tensor(fake_cuda, load_format="direct")
    assert server.init_weights_update_group("127.0.0.1", 29500, 1, 2, "g") == (True, "Success")
    group = {"group_name": "g"} if caps["update_weights_from_distributed"]["support"] == "native" else {}
    assert server.update_weights_from_distributed(["a"], ["bfloat16"], [[2]], **group)[0] is True
    assert server.flush_cache() is True
    if caps["abort"]["support"] != "unsupported" or "/abort_request" in release_routes():
        server.abort(["r1"])  # before 0.4.10 abort-all is unsupported over HTTP, but rids work
    else:  # 0.4.6.post1: no /abort_request; refused before anything is sent
        assert caps["abort"]["note"] == NO_ROUTE + "/abort_request"
        with pytest.raises(NotImplementedError, match="has no /abort_request"):
            server.abort(["r1"])
        assert not [r for r in records(shared_dir, "received") if r["path"] == "/abort_request"]
    if caps["release_memory_occupation"]["support"] == "native":
        server.release_memory_occupation(tags=["kv_cache"])
        server.resume_memory_occupation(tags=["kv_cache"])
    if caps["pause_generation"]["support"] != "unsupported":
        server.pause_generation()
        server.continue_generation()
    seen = {r["path"]: r for r in records(shared_dir)}
    assert seen["/generate"]["body"]["input_ids"] == [1, 2]
    assert not [r for r in records(shared_dir) if r["path"] == "/update_weights_from_tensor"]
    assert seen["/init_weights_update_group"]["body"]["group_name"] == "g"
    if "/abort_request" in release_routes():
        assert seen["/abort_request"]["body"] == {"rid": "r1"}
    assert "/flush_cache" in seen


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that reports a CUDA device (this machine has no GPU): enough for the
    device check; the fake server does not open the handles."""

    @property
    def device(self) -> Any:  # type: ignore[override]
        return torch.device("cuda", 0)


def test_same_capabilities_as_the_in_process_engine(server: ServerEngine) -> None:
    over_http = server.capabilities()
    in_process = {k: v.as_dict() for k, v in capabilities().items()}
    assert set(over_http) == set(in_process)
    routes = release_routes()
    differ = {k for k in in_process if in_process[k] != over_http[k]}
    assert "shutdown" in differ
    assert over_http["shutdown"]["note"].startswith("ends the server's process group")
    for name in differ - {"shutdown"}:  # each difference is documented or a route the release lacks
        route = endpoint(name)
        assert over_http[name]["support"] == "unsupported", name
        if name == "abort" and route in routes:
            assert over_http[name]["note"] == "abort-all over HTTP needs SGLang 0.4.10+ (rids work)"
        else:
            assert route is not None and route not in routes, name
            assert over_http[name]["note"].startswith(NO_ROUTE + route), name
    for name, cap in in_process.items():  # and every route the release lacks makes a difference
        route = endpoint(name)
        if _sends_nothing(name, cap):
            continue  # adapted without a request (begin/end_weight_update before 0.5.21)
        if route is not None and route not in routes:
            assert name in differ and over_http[name]["note"].startswith(NO_ROUTE + route), name


def test_the_release_server_has_every_endpoint_the_facade_calls(server: ServerEngine, shared_dir: Path) -> None:
    routes = release_routes()
    assert {"/generate", "/health", "/flush_cache", "/get_server_info"} <= routes
    for name, cap in server.capabilities().items():
        route = endpoint(name)
        if route is not None and cap["support"] != "unsupported" and not _sends_nothing(name, cap):
            assert route in routes, f"{name} is {cap['support']} but this release's server has no {route}"
    # a capability whose route is missing is refused before any request is sent
    calls: dict[str, Callable[[], Any]] = {
        "abort": lambda: server.abort(["r1"]),
        "destroy_weights_update_group": server.destroy_weights_update_group,
        "pause_generation": server.pause_generation,
        "continue_generation": server.continue_generation,
    }
    for name, call in calls.items():
        route = endpoint(name)
        assert route is not None
        if route in routes:
            continue
        assert server.capabilities()[name]["note"].startswith(NO_ROUTE + route)
        with pytest.raises(NotImplementedError, match=f"has no {route}"):
            call()
        assert not [r for r in records(shared_dir, "received") if r["path"] == route]


def test_get_server_info_and_bad_input_are_the_facades(server: ServerEngine) -> None:
    info = server.get_server_info()
    assert info["tp_size"] == 2 and info["version"]
    with pytest.raises(ValueError):
        server.update_weights_from_distributed(["a"], ["bfloat16", "float32"], [[1]])
    with pytest.raises(ValueError):
        server.release_memory_occupation(tags=["vram"])


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_shutdown_ends_the_process_group_and_frees_the_port(tmp_path: Path) -> None:
    import psutil

    engine = start(tmp_path)
    child_pid = engine.get_server_info()["child_pid"]
    port = int(engine.url.rsplit(":", 1)[1])
    assert psutil.pid_exists(child_pid)
    engine.shutdown()
    engine.shutdown()  # idempotent
    assert engine.process is not None and engine.process.poll() is not None
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    assert not port_in_use("127.0.0.1", port)


def test_a_server_that_never_becomes_healthy(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(EngineLaunchError, match="not healthy within 3s") as info:
        start(tmp_path, "never_healthy", startup_timeout=3)
    assert time.monotonic() - started < 15
    assert "last: HTTP 503" in str(info.value)
    assert "fake server: listening" in str(info.value)  # the server's last log lines come along


def test_a_server_that_exits_at_start(tmp_path: Path) -> None:
    with pytest.raises(EngineLaunchError, match="exited with code 3") as info:
        start(tmp_path, "exit_at_start")
    assert "failing at start on purpose" in str(info.value)


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_a_server_that_dies_mid_request(tmp_path: Path) -> None:
    engine = start(tmp_path, "die_mid_request")
    try:
        with pytest.raises(EngineDeadError, match="exited with code 9"):
            engine.generate(input_ids=[1])
        with pytest.raises(EngineDeadError):
            engine.flush_cache()
    finally:
        engine.shutdown()


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_malformed_responses_are_clear_errors(tmp_path: Path) -> None:
    engine = start(tmp_path, "malformed")
    try:
        with pytest.raises(ServerResponseError, match="not JSON"):
            engine.init_weights_update_group("127.0.0.1", 29500, 1, 2, "g")
    finally:
        engine.shutdown()


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_update_weights_from_tensor_sends_cuda_ipc_handles_as_text(tmp_path: Path) -> None:
    engine = start(tmp_path, tp_size=1)
    try:
        named = [("lm_head.weight", torch.ones(2, 2, dtype=torch.bfloat16)), ("model.norm.weight", torch.ones(2))]
        fake_cuda = [(name, FakeCudaTensor(t)) for name, t in named]
        assert engine.update_weights_from_tensor(fake_cuda, load_format="direct") == (True, "Success")
        (sent,) = [r for r in records(tmp_path) if r["path"] == "/update_weights_from_tensor"]
        assert len(sent["body"]["serialized_named_tensors"]) == 1  # one per tp rank
        base64.b64decode(sent["body"]["serialized_named_tensors"][0], validate=True)  # base64 text on the wire
    finally:
        engine.shutdown()


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_a_request_that_may_have_run_is_never_resent(tmp_path: Path) -> None:
    engine = start(tmp_path, "drop_update", tp_size=1)
    try:
        with pytest.raises(ServerResponseError, match="connection broke"):
            engine.update_weights_from_tensor([("lm_head.weight", FakeCudaTensor(torch.ones(2)))], load_format="direct")
        sent = [r for r in records(tmp_path) if r["path"] == "/update_weights_from_tensor"]
        assert len(sent) == 1
    finally:
        engine.shutdown()


def test_connection_refused_is_retried_until_the_server_listens() -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    servers: list[Any] = []

    def listen_late() -> None:
        time.sleep(0.5)  # the first attempt finds nobody listening
        servers.append(ThreadingHTTPServer(("127.0.0.1", port), Handler))
        servers[0].serve_forever()

    threading.Thread(target=listen_late, daemon=True).start()
    engine = ServerEngine.connect(f"http://127.0.0.1:{port}")
    try:
        assert engine.flush_cache() is True
        assert hits == ["/flush_cache"]  # retried until it listened, sent once
    finally:
        engine.shutdown()
        if servers:
            servers[0].shutdown()
