"""A stand-in SGLang HTTP server built from the installed release's REAL request schemas.

``python fake_server.py SPEC.json SCENARIO RECORD_DIR``. Every POST body is turned into the
release's own ``io_struct`` request object (``cls(**body)``), so a field the release does not
have fails the request exactly as a schema check would; accepted requests are appended to
``RECORD_DIR/requests.jsonl``, and every request that arrives (accepted or not) to
``RECORD_DIR/received.jsonl``. Only the routes the release's real ``http_server.py`` declares are
served (read by ``sglang_roll_compat.server.server_routes``); any other answers 404, as the real
server would. Scenarios: ``healthy``; ``never_healthy`` (/health answers 503);
``exit_at_start`` (dies before serving); ``die_mid_request`` (/generate kills the process before
answering); ``malformed`` (weight endpoints answer 200 with a non-JSON body); ``drop_update`` (the
connection of /update_weights_from_tensor is closed after the body was read, without an answer).
The server starts one child process, in its process group, as SGLang's scheduler would be.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sglang_roll_compat import weightprobe
from sglang_roll_compat.server import server_routes

_WEIGHTS: list[Any] = []  # one TP rank of tests/weights_reference.py's model, built on first use


def _weights_answer(name: str) -> Any:
    """The answer of an engine holding tests/weights_reference.py's model (seed 0, tp 1)."""
    if not _WEIGHTS:
        import weights_reference

        _WEIGHTS.append(weights_reference.rank_model(weights_reference.hf_tensors(seed=0), 0, 1))
    params, modules = _WEIGHTS[0]
    return weightprobe.answer(params, modules, name, 0, 1)


REQUESTS = {
    "/generate": "GenerateReqInput",
    "/update_weights_from_tensor": "UpdateWeightsFromTensorReqInput",
    "/init_weights_update_group": "InitWeightsUpdateGroupReqInput",
    "/update_weights_from_distributed": "UpdateWeightsFromDistributedReqInput",
    "/destroy_weights_update_group": "DestroyWeightsUpdateGroupReqInput",
    "/release_memory_occupation": "ReleaseMemoryOccupationReqInput",
    "/resume_memory_occupation": "ResumeMemoryOccupationReqInput",
    "/pause_generation": "PauseGenerationReqInput",
    "/continue_generation": "ContinueGenerationReqInput",
    "/abort_request": "AbortReq",
    "/update_weights_from_disk": "UpdateWeightFromDiskReqInput",
    "/update_weights_from_ipc": "UpdateWeightsFromIPCReqInput",
    "/get_weights_by_name": "GetWeightsByNameReqInput",
    "/update_weight_version": "UpdateWeightVersionReqInput",
    "/load_lora_adapter": "LoadLoRAAdapterReqInput",
    "/unload_lora_adapter": "UnloadLoRAAdapterReqInput",
    "/load_lora_adapter_from_tensors": "LoadLoRAAdapterFromTensorsReqInput",
    "/open_session": "OpenSessionReqInput",
    "/close_session": "CloseSessionReqInput",
    "/begin_weight_update": "BeginWeightUpdateReqInput",
    "/end_weight_update": "EndWeightUpdateReqInput",
    "/encode": "EmbeddingReqInput",
    "/start_profile": "ProfileReqInput",  # ProfileReq itself from 0.5.15
}
WEIGHT_ENDPOINTS = {
    "/update_weights_from_tensor",
    "/init_weights_update_group",
    "/update_weights_from_distributed",
    "/destroy_weights_update_group",
    "/update_weights_from_disk",
    "/update_weights_from_ipc",
    "/update_weight_version",
    "/load_lora_adapter",
    "/unload_lora_adapter",
    "/load_lora_adapter_from_tensors",
    "/begin_weight_update",
    "/end_weight_update",
}


def fields_of(cls: Any) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(getattr(cls, "__struct_fields__", ()))


def main() -> None:
    spec_path, scenario, record_dir = sys.argv[1:4]
    with open(spec_path) as fh:
        spec = json.load(fh)
    host, port = spec["server_args"]["host"], spec["server_args"]["port"]
    if scenario == "exit_at_start":
        print("fake server: failing at start on purpose", flush=True)
        sys.exit(3)
    import threading

    lock = threading.Lock()
    loaded: dict[str, Any] = {}
    state: dict[str, Any] = {"weight_version": None}

    def sglang(name: str) -> Any:
        """SGLang's modules, imported on first use (so /health answers at once)."""
        with lock:
            if name not in loaded:
                if name == "io":
                    loaded[name] = importlib.import_module("sglang.srt.managers.io_struct")
                elif name == "tm":
                    loaded[name] = importlib.import_module("sglang.srt.managers.tokenizer_manager").TokenizerManager
                else:
                    loaded[name] = importlib.import_module("sglang").__version__
            return loaded[name]

    def served(path: str) -> bool:
        """Whether the release's real server has this route. /health is answered without reading
        the routes (every release has it; the tests check that), so it answers at once."""
        if path == "/health":
            return True
        routes = server_routes()
        return routes is None or path in routes

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a 'scheduler'
    record_path = os.path.join(record_dir, "requests.jsonl")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:
            print("fake server:", fmt % args, flush=True)

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: Any) -> None:
            self._send(status, json.dumps(payload).encode())

        def do_GET(self) -> None:
            self._received("GET")
            if not served(self.path):
                self._send(404, b"not found")
            elif self.path == "/health":
                self._send(503 if scenario == "never_healthy" else 200, b"")
            elif self.path in ("/get_weight_version", "/model_info"):
                self._json(200, {"weight_version": state["weight_version"]})
            elif self.path == "/get_server_info":
                self._json(200, {"version": sglang("version"), "child_pid": child.pid, **spec["server_args"]})
            else:
                self._send(404, b"not found")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            self._received("POST")
            if not served(self.path):
                self._send(404, b"not found")
                return
            if self.path == "/flush_cache":
                self._record(self.path, "flush_cache", body)
                self._send(200, b"Cache flushed.", "text/plain")
                return
            if self.path == "/stop_profile":
                self._record(self.path, "(no body)", body)
                self._send(200, b"Stop profiling.\n", "text/plain")
                return
            if self.path == "/v1/score":  # the OpenAI-style scoring schema of this release
                # the release's own request model: entrypoints/openai/ from 0.4.8, openai_api/ before
                if importlib.util.find_spec("sglang.srt.entrypoints.openai") is not None:
                    protocol = importlib.import_module("sglang.srt.entrypoints.openai.protocol")
                else:
                    protocol = importlib.import_module("sglang.srt.openai_api.protocol")
                try:
                    protocol.ScoringRequest(**body)
                except Exception as exc:
                    self._json(422, {"detail": f"{type(exc).__name__}: {exc}"})
                    return
                self._record(self.path, "ScoringRequest", body)
                self._json(200, {"scores": [[0.25, 0.75] for _ in body.get("items") or []], "model": "fake"})
                return
            io = sglang("io")
            cls_name = REQUESTS.get(self.path)
            if cls_name == "ProfileReqInput" and not hasattr(io, cls_name):
                cls_name = "ProfileReq"
            if self.path in ("/pause_generation", "/continue_generation") and not hasattr(io, cls_name or ""):
                # 0.4.10-0.5.5 serve these routes without a request body (no request class yet)
                if hasattr(sglang("tm"), self.path.strip("/")) and not body:
                    self._record(self.path, "(no body)", body)
                    self._send(200, b"")
                else:
                    self._send(404, b"not found")
                return
            if cls_name is None or not hasattr(io, cls_name):
                self._send(404, b"not found")
                return
            cls = getattr(io, cls_name)
            unknown = set(body) - fields_of(cls)
            if unknown:
                self._json(422, {"detail": f"unknown fields {sorted(unknown)} for {cls_name}"})
                return
            try:
                cls(**body)
            except Exception as exc:  # the schema refuses it
                self._json(422, {"detail": f"{type(exc).__name__}: {exc}"})
                return
            self._record(self.path, cls_name, body)
            if body.get("weight_version") is not None:  # what the release's server does on success
                state["weight_version"] = body["weight_version"]
            if self.path == "/update_weight_version":
                state["weight_version"] = body["new_version"]
            if self.path == "/get_weights_by_name" and body["name"].startswith(weightprobe.PREFIX):
                self._json(200, _weights_answer(body["name"]))  # what the shim's scheduler hook answers
            elif self.path == "/get_weights_by_name":
                self._json(200, [[0.5, 1.5]][: body.get("truncate_size", 100)])
            elif self.path == "/open_session":
                self._json(200, body.get("session_id") or "fake-session-1")
            elif self.path == "/encode":
                self._json(200, {"embedding": [0.25, 0.5], "meta_info": {"prompt_tokens": 1}})
            elif self.path == "/start_profile":
                self._send(200, b"Start profiling.\n", "text/plain")
            elif self.path == "/generate":
                if scenario == "die_mid_request":
                    os._exit(9)
                ids = body.get("input_ids") or [0]
                self._json(200, {"text": "", "output_ids": [7, 8, 9], "meta_info": {"prompt_tokens": len(ids)}})
            elif self.path in WEIGHT_ENDPOINTS:
                if scenario == "malformed":
                    self._send(200, b"<html>oops</html>", "text/html")
                elif scenario == "drop_update" and self.path == "/update_weights_from_tensor":
                    self.close_connection = True
                    self.connection.shutdown(2)
                else:
                    self._json(200, {"success": True, "message": "Success"})
            else:
                self._send(200, b"")

        def _received(self, method: str) -> None:
            with open(os.path.join(record_dir, "received.jsonl"), "a") as fh:
                fh.write(json.dumps({"method": method, "path": self.path}) + "\n")

        def _record(self, path: str, cls_name: str, body: Any) -> None:
            with open(record_path, "a") as fh:
                fh.write(json.dumps({"path": path, "class": cls_name, "body": body}) + "\n")

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"fake server: listening on {host}:{port} (scenario {scenario})", flush=True)
    try:
        server.serve_forever()
    finally:
        child.kill()
        time.sleep(0)


if __name__ == "__main__":
    main()
