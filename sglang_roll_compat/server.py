"""``sglang_roll_compat.ServerEngine``: the same facade over SGLang's HTTP server.

verl, slime and AReaL run SGLang as an HTTP server in a child process; a framework should be able
to switch between that and the in-process ``Engine`` without rewriting its weight-sync, abort and
memory code. ``ServerEngine(**server_args)`` starts the server (``python -m
sglang_roll_compat.serve``: SGLang's own ``launch_server`` with the shim armed, so the env policy
and child hooks reach the server's children too) in its own process group, waits for ``/health``
with a bound (a failure carries the server's last log lines), and maps every facade method to the
release's HTTP endpoint, sending the same request fields the in-process engine sends as objects.
``ServerEngine.connect(url)`` attaches to a server someone else started.

Not every release's server has every endpoint (0.4.6.post1 has no ``/abort_request``, releases
before 0.5.3 no ``/destroy_weights_update_group``, ...): the routes the release declares are read
from the source text of its ``http_server.py`` (:func:`server_routes`), and a capability whose
endpoint is missing is "unsupported" and refused with ``NotImplementedError`` before any request.

HTTP: one ``httpx.AsyncClient`` per event loop (connections are reused), a timeout on every
request, and bounded retries on connection errors only — a request that may have reached the
server is never sent twice. Shutdown ends the whole process group and waits until the port is
free.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import importlib.util
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from . import serverargs, workspace
from .capabilities import ADAPTED, UNSUPPORTED, Capability, _fields
from .errors import EngineDeadError, EngineLaunchError, SGLangRollCompatError
from .facade import ENGINE_MODULE, MemoryMeter
from .facade_rl import SENDS_NOTHING_WHEN_ADAPTED, RLFacade
from .watchdog import DeathNotice

logger = logging.getLogger(__name__)

CONNECT_RETRIES = 3
HEALTH_INTERVAL = 0.5
HTTP_SERVER_MODULE = "sglang.srt.entrypoints.http_server"
# facade capabilities whose endpoint is not "/<capability>" (None: the capability sends no request)
_ENDPOINTS: dict[str, str | None] = {
    "abort": "/abort_request",
    "shutdown": None,
    "score": "/v1/score",
    "get_weight_version": None,  # /get_weight_version, or /model_info where the release has no such route
    "verify_weights": "/get_weights_by_name",  # the reserved request rides on it
}
# a route decorator of the server's FastAPI app: @app.get("/x"), @app.post("/x"), and
# @app.api_route("/x", methods=[...]) with the path on the same line or on the next ones
_ROUTE_DECORATOR = re.compile(
    r"""^[ \t]*@app\.(?:get|post|put|patch|delete|head|options|api_route)\(\s*(?:path\s*=\s*)?(["'])(/[^"'\n]*)\1""",
    re.MULTILINE,
)


class ServerResponseError(SGLangRollCompatError, RuntimeError):
    """The server answered something that is not what the endpoint returns (or an HTTP error)."""


class _ServerDeath(DeathNotice):
    """The server process's death as a death source for the facade (see ``FacadeBase``)."""

    def __init__(self, process: subprocess.Popen[bytes] | None, log_tail: Callable[[], str]) -> None:
        super().__init__()
        self.process = process
        self._log_tail = log_tail
        self._stop = threading.Event()
        if process is not None:
            threading.Thread(target=self._watch, name="sglang-roll-compat-server-watch", daemon=True).start()

    def _watch(self) -> None:
        assert self.process is not None
        while not self._stop.wait(0.2):
            code = self.process.poll()
            if code is not None:
                self.fail(
                    f"the SGLang server process (pid {self.process.pid}) exited with code {code}:\n{self._log_tail()}"
                )
                return

    def fail(self, message: str) -> None:
        with self._lock:
            if self.error is not None or self._stop.is_set():
                return
            self.error = message
            listeners = list(self._listeners)
        logger.error("%s", message)
        self._notify(listeners, message)

    def stop(self) -> None:
        self._stop.set()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def endpoint(capability: str) -> str | None:
    """The HTTP route ``ServerEngine`` calls for a facade capability (None: it sends no request)."""
    return _ENDPOINTS.get(capability, f"/{capability}")


@functools.lru_cache(maxsize=1)
def server_routes() -> frozenset[str] | None:
    """The HTTP routes the installed release's server declares.

    Read from the source text of the release's ``http_server.py`` (the module itself is not
    imported: it pulls in far more than this needs): every path given to a route decorator of its
    FastAPI app, ``@app.get("/x")``, ``@app.post("/x")``, ``@app.api_route("/x", methods=[...])``.
    Routes of routers included from other modules and paths taken from environment variables are
    not read; none of the facade's endpoints is declared that way. None when the source cannot be
    read or declares no ``/generate`` (a layout this reader does not know): then no route is
    assumed missing."""
    try:
        spec = importlib.util.find_spec(HTTP_SERVER_MODULE)
    except (ImportError, ValueError) as exc:
        logger.warning("cannot locate %s (%s); the server's routes are not checked", HTTP_SERVER_MODULE, exc)
        return None
    origin = spec.origin if spec is not None else None
    if not origin or not origin.endswith(".py"):
        logger.warning("no source of %s found; the server's routes are not checked", HTTP_SERVER_MODULE)
        return None
    try:
        text = Path(origin).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("cannot read %s (%s); the server's routes are not checked", origin, exc)
        return None
    routes = frozenset(match.group(2) for match in _ROUTE_DECORATOR.finditer(text))
    if "/generate" not in routes:
        logger.warning("no /generate route found in %s; the server's routes are not checked", origin)
        return None
    return routes


def missing_routes(capabilities: Iterable[str]) -> dict[str, str]:
    """``{capability: route}`` for the capabilities whose endpoint the release's server lacks."""
    routes = server_routes()
    if routes is None:
        return {}
    missing = {}
    for name in capabilities:
        route = endpoint(name)
        if route is not None and route not in routes:
            missing[name] = route
    return missing


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise ImportError("ServerEngine needs httpx: pip install 'sglang_roll_compat[server]'") from None
    return httpx


class ServerEngine(RLFacade):
    """The facade over an SGLang HTTP server in a child process (or an existing one: ``connect``)."""

    def __init__(
        self,
        *,
        worker_name: str | None = None,
        memory_meter: MemoryMeter | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 600.0,
        request_timeout: float = 600.0,
        command: Sequence[str] | None = None,
        **server_args: Any,
    ) -> None:
        """``command`` replaces the server command line (tests, wrappers); ``{spec}``, ``{host}`` and
        ``{port}`` in it are filled in. The spec file holds the server arguments as JSON."""
        serverargs.check(server_args)
        for reserved in ("host", "port"):
            if reserved in server_args:
                raise ValueError(f"pass {reserved}= to ServerEngine itself, not as a server argument")
        self._host = host
        self._port = port if port is not None else free_port(host)
        if port_in_use(host, self._port):
            raise EngineLaunchError(f"port {self._port} on {host} is already in use")
        self._server_args = {**server_args, "host": host, "port": self._port}
        self._request_timeout = request_timeout
        run_dir = workspace.ensure_private_dir(
            workspace.cache_root(), ["run", f"server-{os.getpid()}-{secrets.token_hex(4)}"]
        )
        self._run_dir = str(run_dir)
        spec_path = os.path.join(self._run_dir, "spec.json")
        with open(spec_path, "w", encoding="utf-8") as fh:
            from .childhooks import child_hooks

            json.dump({"server_args": self._server_args, "worker_name": worker_name, "hooks": list(child_hooks())}, fh)
        self._log_path = os.path.join(self._run_dir, "server.log")
        argv = (
            [part.format(spec=spec_path, host=host, port=self._port) for part in command]
            if command is not None
            else [sys.executable, "-m", f"{__package__}.serve", spec_path]
        )
        log = open(self._log_path, "wb")  # noqa: SIM115 - the child writes to it for its lifetime
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        finally:
            log.close()
        self._url = f"http://{host}:{self._port}"
        self._common_setup(memory_meter)
        try:
            self._wait_healthy(startup_timeout)
        except BaseException:
            self._stop_process()
            raise

    @classmethod
    def connect(
        cls, url: str, *, tp_size: int = 1, memory_meter: MemoryMeter | None = None, request_timeout: float = 600.0
    ) -> ServerEngine:
        """Attach to a server someone else started; ``shutdown()`` then only closes connections."""
        self = cls.__new__(cls)
        self._url = url.rstrip("/")
        self._process = None
        self._server_args = {"tp_size": tp_size}
        self._request_timeout = request_timeout
        self._log_path = ""
        self._run_dir = ""
        self._common_setup(memory_meter)
        return self

    def _common_setup(self, memory_meter: MemoryMeter | None) -> None:
        self._clients: dict[int, Any] = {}
        self._death = _ServerDeath(self._process, self._log_tail)
        self._setup(memory_meter, None)
        # what differs over HTTP: endpoints this release's server lacks, the server lists no
        # pending requests (abort-all), and shutdown ends the server
        self._missing_routes = {
            name: route
            for name, route in missing_routes(self._caps).items()
            if not (name in SENDS_NOTHING_WHEN_ADAPTED and self._caps[name].support == ADAPTED)
        }
        for name, route in self._missing_routes.items():
            cap = self._caps[name]
            note = f"this release's HTTP server has no {route}"
            if cap.support == UNSUPPORTED and cap.note:  # the in-process reason, too
                note = f"{note} ({cap.note})"
            self._caps[name] = Capability(UNSUPPORTED, note)
        if self._missing_routes:
            logger.debug("this SGLang release's HTTP server lacks %s", sorted(self._missing_routes.values()))
        if "abort" not in self._missing_routes and "abort_all" not in _fields(self._io.AbortReq):
            self._caps["abort"] = Capability(UNSUPPORTED, "abort-all over HTTP needs SGLang 0.4.10+ (rids work)")
        self._caps["shutdown"] = Capability(ADAPTED, "ends the server's process group and waits for its port")

    async def async_update_weights_from_tensor(
        self, named_tensors: Sequence[tuple[str, Any]], *args: Any, **kwargs: Any
    ) -> tuple[bool, str]:
        """As the in-process engine's, but the tensors must live on a CUDA device: they travel to
        the server as CUDA IPC handles (a CPU tensor would need this process's multiprocessing
        authkey on the other side, and the server's scheduler would fail on it)."""
        self._require("update_weights_from_tensor")
        for i, item in enumerate(named_tensors if isinstance(named_tensors, (list, tuple)) else []):
            tensor = item[1] if isinstance(item, (tuple, list)) and len(item) == 2 else None
            device = getattr(tensor, "device", None)
            if device is not None and getattr(device, "type", "") != "cuda":
                raise ValueError(
                    f"named_tensors[{i}] is on {device}: over HTTP, update_weights_from_tensor sends CUDA IPC "
                    "handles, so the tensors must be on a CUDA device (use the in-process Engine for CPU tensors)"
                )
        return await super().async_update_weights_from_tensor(named_tensors, *args, **kwargs)

    @property
    def url(self) -> str:
        return self._url

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._process

    def _log_tail(self, lines: int = 40) -> str:
        if not self._log_path:
            return ""
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as fh:
                return "".join(deque(fh, maxlen=lines)).rstrip()
        except OSError:
            return ""

    # -- startup and shutdown -------------------------------------------------------------
    def _wait_healthy(self, timeout: float) -> None:
        httpx = _httpx()
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        with httpx.Client(timeout=httpx.Timeout(5.0)) as client:
            while True:
                assert self._process is not None
                code = self._process.poll()
                if code is not None:
                    raise EngineLaunchError(
                        f"the SGLang server exited with code {code} before it was healthy; its last log lines:\n"
                        f"{self._log_tail()}"
                    )
                try:
                    response = client.get(f"{self._url}/health")
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}"
                if time.monotonic() > deadline:
                    raise EngineLaunchError(
                        f"the SGLang server at {self._url} was not healthy within {timeout:.0f}s (last: {last}); "
                        f"its last log lines:\n{self._log_tail()}"
                    )
                time.sleep(HEALTH_INTERVAL)

    def _stop_process(self, timeout: float = 15.0) -> None:
        process = self._process
        if process is None:
            return
        if isinstance(self._death, _ServerDeath):
            self._death.stop()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
            if not _group_alive(process.pid):
                break
            time.sleep(0.2)
        deadline = time.monotonic() + timeout
        while _group_alive(process.pid) and time.monotonic() < deadline:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        while port_in_use(self._host, self._port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def _close_transport(self) -> None:
        for client in list(self._clients.values()):
            loop = getattr(client, "_sglang_roll_compat_loop", None)
            if loop is not None and not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(client.aclose())
        self._clients.clear()
        self._stop_process()

    # -- the HTTP transport ---------------------------------------------------------------
    def _client(self) -> Any:
        httpx = _httpx()
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            client = httpx.AsyncClient(
                base_url=self._url, timeout=httpx.Timeout(self._request_timeout, connect=5.0), trust_env=False
            )
            client._sglang_roll_compat_loop = loop
            self._clients[id(loop)] = client
        return client

    async def _http(self, method: str, path: str, body: Any = None) -> Any:
        """One request; connection errors (nothing was sent) are retried, nothing else. A request
        whose connection broke is never resent: it may have run; if the server died meanwhile,
        that is what the caller hears (EngineDeadError)."""
        httpx = _httpx()
        delay = 0.2
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                return await self._client().request(method, path, json=body)
            except httpx.ConnectError:
                if attempt == CONNECT_RETRIES:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
            except httpx.TransportError as exc:
                await self._raise_if_dead(exc)
                raise ServerResponseError(f"{path}: the connection broke ({type(exc).__name__}: {exc})") from exc
        raise AssertionError("unreachable")

    async def _raise_if_dead(self, cause: BaseException, grace: float = 1.0) -> None:
        """A broken connection may mean the server died: give the process a moment to be seen."""
        if self._process is None:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                death = self._death
                pid = self._process.pid
                message = f"the SGLang server process (pid {pid}) exited with code {code}:\n{self._log_tail()}"
                if death is not None and death.error:
                    message = death.error
                raise EngineDeadError(message) from cause
            await asyncio.sleep(0.05)

    @staticmethod
    def _json(response: Any, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ServerResponseError(
                f"{path}: HTTP {response.status_code} with a body that is not JSON: {response.text[:200]!r}"
            ) from None

    async def _request(self, op: str, fields: dict[str, Any] | None) -> Any:
        self._require(op)  # the release's server may lack the endpoint: refuse before sending
        path = endpoint(op)
        assert path is not None, op
        response = await self._http("POST", path, fields if fields is not None else None)
        if op == "flush_cache":
            return (response.status_code == 200, response.text)
        if op in _NO_ANSWER:
            if response.status_code != 200:
                raise ServerResponseError(f"{path}: HTTP {response.status_code}: {response.text[:500]}")
            return None
        payload = self._json(response, path)
        if op in _JSON_ANSWER:
            if response.status_code != 200:
                raise ServerResponseError(f"{path}: HTTP {response.status_code}: {str(payload)[:500]}")
            return payload
        if not isinstance(payload, dict) or "success" not in payload:
            raise ServerResponseError(f"{path}: expected {{'success': ..., 'message': ...}}, got {str(payload)[:200]}")
        # LoRA answers carry error_message (and loaded_adapters) instead of message
        return (bool(payload["success"]), str(payload.get("message") or payload.get("error_message") or ""))

    async def _generate_call(self, kwargs: dict[str, Any]) -> Any:
        self._require("generate")
        body = {k: v for k, v in kwargs.items() if v is not None}
        if "prompt" in body:
            body["text"] = body.pop("prompt")
        response = await self._http("POST", "/generate", body)
        if response.status_code != 200:
            raise ServerResponseError(f"/generate: HTTP {response.status_code}: {response.text[:500]}")
        payload = self._json(response, "/generate")
        if not isinstance(payload, (dict, list)):
            raise ServerResponseError(f"/generate: expected an object or a list, got {str(payload)[:200]}")
        return payload

    def _generate_params(self) -> frozenset[str]:
        fields = _fields(self._io.GenerateReqInput) - {"text", "stream"}
        return frozenset(fields)

    # -- the HTTP transport of facade_rl -------------------------------------------------------
    def _knows_server_args(self) -> bool:
        return self._process is not None  # connect(url): the server's arguments are not known here

    def _local_paths(self) -> bool:
        return self._process is not None  # a server this object started runs on this machine

    async def _post_json(self, route: str, body: Any) -> Any:
        self._require_route(route)
        response = await self._http("POST", route, body)
        payload = self._json(response, route)
        if response.status_code != 200:
            raise ServerResponseError(f"{route}: HTTP {response.status_code}: {str(payload)[:500]}")
        return payload

    def _require_route(self, route: str) -> None:
        routes = server_routes()
        if routes is not None and route not in routes:
            raise NotImplementedError(f"this release's HTTP server has no {route}")

    async def _read_weight_version(self) -> str | None:
        routes = server_routes()
        route = "/get_weight_version" if routes is None or "/get_weight_version" in routes else "/model_info"
        self._require_route(route)
        response = await self._http("GET", route)
        payload = self._json(response, route)
        if response.status_code != 200 or not isinstance(payload, dict) or "weight_version" not in payload:
            raise ServerResponseError(f"{route}: HTTP {response.status_code}, no weight_version: {str(payload)[:200]}")
        version = payload["weight_version"]
        return None if version is None else str(version)

    async def _set_weight_version(self, version: str) -> tuple[bool, str]:
        payload = await self._post_json("/update_weight_version", {"new_version": version, "abort_all_requests": False})
        if not isinstance(payload, dict) or "success" not in payload:
            raise ServerResponseError(f"/update_weight_version: expected success/message, got {str(payload)[:200]}")
        return bool(payload["success"]), str(payload.get("message", ""))

    def _profile_fields(self) -> frozenset[str]:
        cls = getattr(self._io, "ProfileReqInput", None) or self._io.ProfileReq  # 0.5.15+: ProfileReq itself
        return _fields(cls) - {"type", "req_type", "profile_id"}

    async def _profile(self, start: bool, fields: dict[str, Any]) -> None:
        route = "/start_profile" if start else "/stop_profile"
        self._require_route(route)
        response = await self._http("POST", route, fields if start else None)
        if response.status_code != 200:
            raise ServerResponseError(f"{route}: HTTP {response.status_code}: {response.text[:500]}")

    async def _encode(self, fields: dict[str, Any]) -> Any:
        self._require("encode")
        return await self._post_json("/encode", fields)

    async def _score(self, fields: dict[str, Any]) -> Any:
        self._require("score")
        # the OpenAI-style schema requires "model" on some releases (0.4.10.post2)
        model = self._server_arg("served_model_name") or self._server_arg("model_path") or "default"
        payload = await self._post_json("/v1/score", {**fields, "model": str(model)})
        if not isinstance(payload, dict) or not isinstance(payload.get("scores"), list):
            raise ServerResponseError(f"/v1/score: expected {{'scores': [...]}}, got {str(payload)[:200]}")
        return payload["scores"]

    async def _abort(self, rids: list[str] | None) -> list[str]:
        if "abort" in self._missing_routes:
            self._require("abort")  # no /abort_request: NotImplementedError, nothing is sent
        abort_fields = _fields(self._io.AbortReq)
        if rids is None:
            if "abort_all" not in abort_fields:
                raise NotImplementedError("abort-all over HTTP needs SGLang 0.4.10+; pass the rids to abort")
            bodies: list[dict[str, Any]] = [{"abort_all": True}]
        else:
            bodies = [{"rid": rid} for rid in rids]
        path = endpoint("abort")
        assert path is not None
        for body in bodies:
            response = await self._http("POST", path, body)
            if response.status_code != 200:
                raise ServerResponseError(f"{path}: HTTP {response.status_code}: {response.text[:500]}")
        return rids or []

    def _serialize(self, payload: Any) -> Any:
        import importlib

        serializer = importlib.import_module(ENGINE_MODULE).MultiprocessingSerializer
        text = serializer.serialize(payload, output_str=True)
        if isinstance(text, bytes):
            # SGLang 0.5.4's serialize(output_str=True) computes the base64 text and returns the raw
            # bytes instead, which no JSON body can carry: encode them as the release's deserialize expects
            text = base64.b64encode(text).decode("ascii")
        return text

    def _server_arg(self, name: str) -> Any:
        if name in self._server_args:
            return self._server_args[name]
        if self._process is not None and name == "base_gpu_id":
            return 0  # SGLang's default, for a server this object started
        return None  # a server someone else started: not known here

    def _tp_size(self) -> int:
        return int(self._server_args.get("tp_size", 1) or 1)

    def _child_pids(self) -> list[int]:
        if self._process is None:
            return []
        import psutil

        try:
            proc = psutil.Process(self._process.pid)
            return [self._process.pid, *(c.pid for c in proc.children(recursive=True))]
        except psutil.Error:
            return []

    def _server_info(self) -> dict[str, Any]:
        self._require("get_server_info")
        httpx = _httpx()
        response = httpx.get(f"{self._url}/get_server_info", timeout=self._request_timeout, trust_env=False)
        if response.status_code != 200:
            raise ServerResponseError(f"/get_server_info: HTTP {response.status_code}: {response.text[:500]}")
        payload = self._json(response, "/get_server_info")
        if not isinstance(payload, dict):
            raise ServerResponseError(f"/get_server_info: expected an object, got {str(payload)[:200]}")
        return payload


# operations whose endpoint answers 200 and nothing the facade reads, or a JSON value it returns
_NO_ANSWER = frozenset(
    {
        "release_memory_occupation",
        "resume_memory_occupation",
        "pause_generation",
        "continue_generation",
        "close_session",
    }
)
_JSON_ANSWER = frozenset({"get_weights_by_name", "open_session"})


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group ``pgid``.

    ``killpg(pgid, 0)`` also succeeds for zombies, which an init that does not reap (containers)
    leaves behind for good, so the group is read member by member."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


__all__ = ["ServerEngine", "ServerResponseError", "endpoint", "missing_routes", "server_routes"]
