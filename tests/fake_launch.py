"""The launch boundary, faked: the REAL upstream ``Engine.__init__`` runs, but its launch function
returns a recording tokenizer manager instead of starting processes.

The fake launch builds its return tuple from the names in the real launch function's final
``return`` (2 to 6 elements depending on the release), so the real ``Engine.__init__`` of every
release unpacks what it expects. The fake tokenizer manager records the real ``io_struct`` request objects
it is sent and answers with canned results.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

SCHEDULER_INFO = {"status": "ready", "max_total_num_tokens": 4096, "max_req_input_len": 2048}


class Output:
    def __init__(self, success: bool = True, message: str = "ok") -> None:
        self.success = success
        self.message = message


@dataclasses.dataclass
class _FakeState:
    rid: str
    prompt_tokens: int
    aborted: bool = False


class LoRAAnswer:
    """Shaped like upstream's LoRAUpdateResult."""

    def __init__(self, success: bool, error_message: str | None, loaded_adapters: dict[str, str]) -> None:
        self.success = success
        self.error_message = error_message
        self.loaded_adapters = loaded_adapters


def _real_tm() -> Any:
    return importlib.import_module("sglang.srt.managers.tokenizer_manager").TokenizerManager


class FakeTokenizerManager:
    """Records every call; canned answers. ``fail_flushes`` makes the next N flushes fail."""

    def __init__(self, server_args: Any) -> None:
        self.server_args = server_args
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.rid_to_state: dict[str, Any] = {}
        self.fail_flushes = 0
        self.tensor_update_results: list[tuple[bool, str]] = []  # answers of the next tensor updates
        self.block: Any = None  # an asyncio.Event-like to await before answering
        self.max_req_input_len = None
        self.startup_time = 0.0  # read by get_server_info from 0.5.22
        # upstream's auto_create_handle_loop returns at once when its loop exists (no_create_loop
        # up to 0.5.2, event_loop after): the real (patched) entry runs, the IPC loop is faked
        self.no_create_loop = True
        self.event_loop: Any = "the fake has no IPC loop"
        # generation: one token every ``token_interval`` seconds, up to max_new_tokens (0: at once);
        # while a request is generating its rid is a key of ``rid_to_state``, as upstream's
        self.token_interval = 0.0
        # the adapters named at start are loaded by upstream's schedulers at launch (lora_paths,
        # a dict once ServerArgs has normalized it)
        start_loras = getattr(server_args, "lora_paths", None)
        self.loras: dict[str, str] = {}
        if isinstance(start_loras, dict):
            self.loras.update((str(k), str(v)) for k, v in start_loras.items())
        self._config_updates: dict[str, Any] = {}
        if hasattr(_real_tm(), "config_value"):  # 0.5.17+: what changed after launch, on top of the record
            self.config_value = self._config_value

    def record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def requests(self, name: str) -> list[Any]:
        return [args[0] for n, args, _ in self.calls if n == name and args]

    @property
    def _chosen_loop(self) -> Any:
        """0.5.4.post2 … 0.5.6.post2: upstream's auto_create_handle_loop returns at once when the
        loop it chose first is the current one (it asserts that they are the same); the fake has
        no IPC loop, so the current loop is always the chosen one."""
        import asyncio

        return asyncio.get_event_loop()

    def auto_create_handle_loop(self) -> None:
        """The real, patched ``TokenizerManager.auto_create_handle_loop``, on this object (ROLL
        calls it right after creating the engine)."""
        real = importlib.import_module("sglang.srt.managers.tokenizer_manager").TokenizerManager
        real.auto_create_handle_loop(self)

    def _enter(self) -> None:
        """What every upstream request path does first."""
        self.auto_create_handle_loop()

    async def _maybe_block(self) -> None:
        if self.block is not None:
            await self.block.wait()

    async def generate_request(self, obj: Any, request: Any = None) -> AsyncIterator[Any]:
        """Shaped like upstream's: a single request yields one dict (non-streaming: when it ends),
        a batch (``input_ids`` a list of lists) one list of ``batch * n`` dicts. With
        ``token_interval`` set, tokens come one by one and ``abort_request(rid)`` ends a request
        early with an abort finish reason."""
        self._enter()
        self.record("generate_request", obj)
        await self._maybe_block()
        if type(obj).__name__ == "EmbeddingReqInput":
            yield {"embedding": [0.25, 0.5], "meta_info": {"prompt_tokens": 1}}
            return
        ids = obj.input_ids if getattr(obj, "input_ids", None) is not None else [0]
        batch = bool(ids) and isinstance(ids[0], list)
        prompts = ids if batch else [ids]
        params = obj.sampling_params or {}
        n = int((params[0] if isinstance(params, list) else params).get("n", 1) or 1) if batch else 1
        rids = obj.rid if isinstance(obj.rid, list) else [obj.rid] * len(prompts)
        states = []
        for i, prompt in enumerate(p for p in prompts for _ in range(n)):
            rid = rids[i // n] if rids[i // n] is not None else f"fake-{len(self.calls)}-{i}"
            rid = rid if n == 1 else f"{rid}-{i % n}"
            state = _FakeState(rid, len(prompt))
            self.rid_to_state[rid] = state
            states.append(state)
        try:
            outs = [await self._run(state, params, bool(obj.return_logprob)) for state in states]
        finally:
            for state in states:
                self.rid_to_state.pop(state.rid, None)
        yield outs if batch else outs[0]

    async def _run(self, state: _FakeState, params: Any, logprob: bool) -> dict[str, Any]:
        import asyncio

        params = params[0] if isinstance(params, list) else params
        limit = int(params.get("max_new_tokens", 3) or 3) if self.token_interval else 3
        tokens: list[int] = []
        while len(tokens) < limit and not state.aborted:
            if self.token_interval:
                await asyncio.sleep(self.token_interval)
            tokens.append(7 + len(tokens))
        if state.aborted:
            finish: Any = {"type": "abort", "message": "Abort in waiting queue"}
        else:
            finish = {"type": "length", "length": limit} if self.token_interval else "length"
        meta: dict[str, Any] = {
            "id": state.rid,
            "prompt_tokens": state.prompt_tokens,
            "completion_tokens": len(tokens),
            "finish_reason": finish,
        }
        if logprob:  # upstream: (logprob, token id, token text or None) per output token
            meta["output_token_logprobs"] = [(-0.5 - 0.01 * i, t, None) for i, t in enumerate(tokens)]
        return {"text": "", "output_ids": tokens, "meta_info": meta}

    async def update_weights_from_tensor(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        self._enter()
        self.record("update_weights_from_tensor", obj)
        await self._maybe_block()
        if self.tensor_update_results:
            return self.tensor_update_results.pop(0)
        self._versioned(obj)
        return True, "Success"

    async def update_weights_from_distributed(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        self.record("update_weights_from_distributed", obj)
        self._versioned(obj)
        return True, "Success"

    # -- the rest of the RL-facing API (facade_rl) ----------------------------------------------
    def _versioned(self, obj: Any) -> None:
        """What the real tokenizer manager does after a successful update, where it does it."""
        version = getattr(obj, "weight_version", None)
        if version is not None and hasattr(_real_tm(), "_update_weight_version_if_provided"):
            self._update_weight_version_if_provided(version)

    def _update_weight_version_if_provided(self, version: str | None) -> None:
        if version is None:
            return
        if hasattr(_real_tm(), "config_value"):  # 0.5.17+: a config record (server_args is read-only)
            self._config_updates["weight_version"] = version
        else:
            self.server_args.weight_version = version

    def _config_value(self, name: str) -> Any:
        return self._config_updates.get(name, getattr(self.server_args, name, None))

    async def update_weight_version(self, obj: Any) -> None:
        self.record("update_weight_version", obj)
        self._update_weight_version_if_provided(obj.new_version)

    async def update_weights_from_disk(self, obj: Any, request: Any = None) -> tuple[bool, str, int]:
        self.record("update_weights_from_disk", obj)
        self._versioned(obj)
        return True, "Succeeded to update model weights.", 0

    async def update_weights_from_ipc(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        self.record("update_weights_from_ipc", obj)
        self._versioned(obj)
        return True, "Success"

    async def get_weights_by_name(self, obj: Any, request: Any = None) -> Any:
        self.record("get_weights_by_name", obj)
        return None if obj.name == "no.such.weight" else [[0.5, 1.5]][: obj.truncate_size]

    async def load_lora_adapter(self, obj: Any, request: Any = None) -> Any:
        self.record("load_lora_adapter", obj)
        self.loras[obj.lora_name] = obj.lora_path
        return LoRAAnswer(True, None, dict(self.loras))

    async def load_lora_adapter_from_tensors(self, obj: Any, request: Any = None) -> Any:
        self.record("load_lora_adapter_from_tensors", obj)
        self.loras[obj.lora_name] = "<tensors>"
        return LoRAAnswer(True, None, dict(self.loras))

    async def unload_lora_adapter(self, obj: Any, request: Any = None) -> Any:
        self.record("unload_lora_adapter", obj)
        self.loras.pop(obj.lora_name, None)
        return LoRAAnswer(True, None, dict(self.loras))

    async def open_session(self, obj: Any, request: Any = None) -> str | None:
        self.record("open_session", obj)
        return obj.session_id or "fake-session-1"

    async def close_session(self, obj: Any, request: Any = None) -> None:
        self.record("close_session", obj)

    async def begin_weight_update(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        self.record("begin_weight_update", obj)
        return True, "Success"

    async def end_weight_update(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        self.record("end_weight_update", obj)
        return True, "Success"

    async def start_profile(self, *args: Any, **kwargs: Any) -> None:
        self.record("start_profile", *args, **kwargs)

    async def stop_profile(self) -> None:
        self.record("stop_profile")

    async def score_request(self, **kwargs: Any) -> list[list[float]]:
        self.record("score_request", **kwargs)
        return [[0.25, 0.75] for _ in kwargs["items"]]

    async def init_weights_update_group(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        self.record("init_weights_update_group", obj)
        return True, "Success"

    async def destroy_weights_update_group(self, obj: Any, request: Any = None) -> tuple[bool, str]:
        self.record("destroy_weights_update_group", obj)
        return True, "Success"

    async def release_memory_occupation(self, obj: Any, request: Any = None) -> None:
        self.record("release_memory_occupation", obj)

    async def resume_memory_occupation(self, obj: Any, request: Any = None) -> None:
        self.record("resume_memory_occupation", obj)

    async def flush_cache(self) -> Output:
        self.record("flush_cache")
        if self.fail_flushes > 0:
            self.fail_flushes -= 1
            return Output(False, "pending requests")
        return Output(True)

    def abort_request(self, *args: Any, **kwargs: Any) -> None:
        self.record("abort_request", *args, **kwargs)
        rid = kwargs.get("rid", args[0] if args else "")
        for key, state in list(self.rid_to_state.items()):
            # tests may put their own objects here: only the fake's own requests generate
            if isinstance(state, _FakeState) and (kwargs.get("abort_all") or key == rid):
                state.aborted = True

    async def pause_generation(self, *args: Any) -> None:
        self.record("pause_generation", *args)

    async def continue_generation(self, *args: Any) -> None:
        self.record("continue_generation", *args)

    def resolved_config_dict(self, base: dict[str, Any]) -> dict[str, Any]:
        """0.5.17 and 0.5.18 ask the tokenizer manager for the record with its updates on top."""
        return dict(base)

    async def get_internal_state(self) -> Any:
        """Shaped like the real one of this release: a dict (<= 0.4.6.post1) or a list of dicts."""
        self.record("get_internal_state")
        real = importlib.import_module("sglang.srt.managers.tokenizer_manager").TokenizerManager
        annotation = str(inspect.signature(real.get_internal_state).return_annotation)
        return {"fake": True} if "Dict" in annotation.split("[", maxsplit=1)[0] else [{"fake": True}]


def _element(name: str, server_args: Any, port_args: Any, tm: FakeTokenizerManager, engine_mod: Any) -> Any:
    if name == "tokenizer_manager":
        return tm
    if name in ("template_manager", "subprocess_watchdog"):
        return None
    if name == "port_args":
        return port_args
    if name == "scheduler_info":
        return dict(SCHEDULER_INFO)
    if name == "scheduler_infos":
        return [dict(SCHEDULER_INFO)]
    if name == "scheduler_init_result":
        cls = engine_mod.SchedulerInitResult
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "scheduler_infos":
                values[f.name] = [dict(SCHEDULER_INFO)]
            elif f.name == "all_child_pids":
                values[f.name] = []
            elif f.name in ("wait_for_ready", "wait_for_completion"):
                values[f.name] = lambda: None
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                values[f.name] = None
        return cls(**values)
    if name.endswith("_procs"):
        return []
    raise AssertionError(f"fake launch: unknown launch result element {name!r}")


def launch_result_names(engine_mod: Any) -> list[str]:
    """The names in the final ``return`` of the real launch function (its normal result)."""
    tree = ast.parse(inspect.getsource(engine_mod))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "_launch_subprocesses":
            last = node.body[-1]
            assert isinstance(last, ast.Return) and isinstance(last.value, ast.Tuple), ast.dump(last)
            return [ast.unparse(element) for element in last.value.elts]
    raise AssertionError("no _launch_subprocesses in the engine module")


class FakeLaunch:
    def __init__(self, engine_mod: Any) -> None:
        self.engine_mod = engine_mod
        self.managers: list[FakeTokenizerManager] = []
        self.result_names = launch_result_names(engine_mod)
        self.start_children = 0  # start this many sleeping children the way SGLang starts its own
        self.children: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        for _ in range(self.start_children):
            # through the engine module's ``mp`` global, exactly where SGLang creates its children
            proc = self.engine_mod.mp.Process(target=time.sleep, args=(120,), daemon=True)
            proc.start()
            self.children.append(proc)
        server_args = kwargs.get("server_args", args[0] if args else None)
        port_args = kwargs.get("port_args")
        if port_args is None:
            port_args = importlib.import_module("sglang.srt.server_args").PortArgs.init_new(server_args)
        # what the real launch does with the record before it returns (0.5.19+: resolution at
        # launch; 0.5.20+: the process-wide config that Engine.__init__ then reads)
        if hasattr(server_args, "resolve_once"):
            server_args.resolve_once()
        if hasattr(self.engine_mod, "publish"):
            self.engine_mod.publish(server_args, role="tokenizer")
        tm = FakeTokenizerManager(server_args)
        self.managers.append(tm)
        return tuple(_element(n, server_args, port_args, tm, self.engine_mod) for n in self.result_names)


def install(monkeypatch: pytest.MonkeyPatch) -> FakeLaunch:
    """Replace the launch function of the installed release (module function or classmethod)."""
    engine_mod = importlib.import_module("sglang.srt.entrypoints.engine")
    fake = FakeLaunch(engine_mod)
    if "_launch_subprocesses" in vars(engine_mod):
        monkeypatch.setattr(engine_mod, "_launch_subprocesses", fake)
    else:

        def launch(cls: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
            return fake(*args, **kwargs)

        monkeypatch.setattr(engine_mod.Engine, "_launch_subprocesses", classmethod(launch))
    return fake


def tm(fake: FakeLaunch) -> FakeTokenizerManager:
    """The tokenizer manager of the engine launched last."""
    return fake.managers[-1]
