"""``python -m sglang_roll_compat smoke``: the whole product on a real GPU, end to end.

Launches the facade ``Engine`` on a model the package ships as a config only (``load_format=
"dummy"``, ``skip_tokenizer_init=True``: token ids in, token ids out, nothing downloaded) from a
non-main thread, as an RL framework's rollout worker would, and checks, recording numbers:

* generation returns tokens (greedy, so repeatable);
* ``update_weights_from_tensor`` changes the output deterministically (same weights -> same
  tokens, other weights -> other tokens), and its bandwidth for the whole parameter set;
* ``release_memory_occupation`` frees GPU memory and ``resume_memory_occupation`` brings it back;
* the env policy is observed inside the scheduler subprocess (a child hook records its env) and
  the FlashInfer workspace is the private per-worker one;
* ``shutdown()`` leaves no child process.

``--baseline`` instead times one launch of the raw upstream Engine with the shim unpatched (the
ratio of launch times is the shim's cost). Results are printed as JSON and written to ``--out``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable
from importlib import import_module
from typing import Any

from . import envpolicy, workspace
from .models import small_model_path

SMOKE_DIR_ENV = "SGLANG_ROLL_COMPAT_SMOKE_DIR"
CHILD_ENV_NAMES = (
    "FLASHINFER_WORKSPACE_BASE",
    "TRITON_CACHE_DIR",
    "NCCL_CUMEM_ENABLE",
    "NCCL_NVLS_ENABLE",
    "CUDA_DEVICE_MAX_CONNECTIONS",
    "CUDA_MODULE_LOADING",
    "PYTORCH_CUDA_ALLOC_CONF",
    "SGLANG_BLOCK_NONZERO_RANK_CHILDREN",
    "TRTLLM_ENABLE_PDL",
    "CUDA_VISIBLE_DEVICES",
)
PROMPT = list(range(1, 17))
SAMPLING = {"max_new_tokens": 8, "temperature": 0.0, "ignore_eos": True}


def engine_args(model_path: str | None = None, cpu: bool = False) -> dict[str, Any]:
    """Arguments known to work for a dummy-weight model on one Hopper GPU (see docs/gpu-e2e.md);
    ``cpu`` gives a dry-run variant for a CPU machine (only releases whose CPU path runs)."""
    if cpu:
        return {
            "model_path": model_path or small_model_path(),
            "load_format": "dummy",
            "skip_tokenizer_init": True,
            "device": "cpu",
            "attention_backend": "torch_native",
            "disable_cuda_graph": True,
            "mem_fraction_static": 0.05,
            "max_total_tokens": 4096,
            "random_seed": 0,
            "log_level": "error",
        }
    return {
        "model_path": model_path or small_model_path(),
        "load_format": "dummy",
        "skip_tokenizer_init": True,
        "attention_backend": "triton",
        "sampling_backend": "pytorch",
        "disable_cuda_graph": True,
        "mem_fraction_static": 0.3,
        "enable_memory_saver": True,
        "random_seed": 0,
        "log_level": "error",
    }


def record_child_env() -> None:
    """A child hook: record, from inside the SGLang child, its role, pid and environment."""
    from .childhooks import child_role

    directory = os.environ.get(SMOKE_DIR_ENV)
    if not directory:
        return
    role = child_role() or "unknown"
    payload = {"role": role, "pid": os.getpid(), "env": {n: os.environ.get(n) for n in CHILD_ENV_NAMES}}
    with open(os.path.join(directory, f"child-{role}-{os.getpid()}.json"), "w", encoding="utf-8") as fh:
        json.dump(payload, fh)


def qwen2_shapes(config: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """Every parameter of a Qwen2 config: its Hugging Face name and shape, in checkpoint order."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    heads, kv, hd = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (config["vocab_size"], h))]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        shapes += [
            (f"{p}.self_attn.q_proj.weight", (heads * hd, h)),
            (f"{p}.self_attn.q_proj.bias", (heads * hd,)),
            (f"{p}.self_attn.k_proj.weight", (kv * hd, h)),
            (f"{p}.self_attn.k_proj.bias", (kv * hd,)),
            (f"{p}.self_attn.v_proj.weight", (kv * hd, h)),
            (f"{p}.self_attn.v_proj.bias", (kv * hd,)),
            (f"{p}.self_attn.o_proj.weight", (h, heads * hd)),
            (f"{p}.mlp.gate_proj.weight", (inter, h)),
            (f"{p}.mlp.up_proj.weight", (inter, h)),
            (f"{p}.mlp.down_proj.weight", (h, inter)),
            (f"{p}.input_layernorm.weight", (h,)),
            (f"{p}.post_attention_layernorm.weight", (h,)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (config["vocab_size"], h))]
    return shapes


def model_tensors(
    config: dict[str, Any], seed: int, device: str = "cuda", draw_on: str = "cpu"
) -> list[tuple[str, Any]]:
    """Every parameter of a Qwen2 config under its Hugging Face name, filled from ``seed`` and
    drawn on ``draw_on`` ("cpu": the same values on every machine; the tensors' own GPU: fast
    enough for a 15 GB model)."""
    import torch

    gen = torch.Generator(device=draw_on).manual_seed(seed)
    out = []
    for name, shape in qwen2_shapes(config):
        if name.endswith("norm.weight"):
            tensor = torch.ones(shape, device=draw_on)
        else:
            tensor = torch.randn(shape, generator=gen, device=draw_on) * 0.05
        out.append((name, tensor.to(device=device, dtype=torch.bfloat16)))
    return out


def _nbytes(named: list[tuple[str, Any]]) -> int:
    return sum(t.numel() * t.element_size() for _, t in named)


def _children_left() -> list[dict[str, Any]]:
    import multiprocessing

    import psutil

    tracker = getattr(getattr(multiprocessing, "resource_tracker", None), "_resource_tracker", None)
    skip = {getattr(tracker, "_pid", None)}
    out = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in skip:
            continue
        try:
            out.append({"pid": child.pid, "cmd": " ".join(child.cmdline())[:160]})
        except psutil.Error:
            continue
    return out


def _step(results: dict[str, Any], name: str, func: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    try:
        value = func()
        results["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - started, 4)}
        return value
    except BaseException as exc:
        results["steps"][name] = {
            "ok": False,
            "seconds": round(time.perf_counter() - started, 4),
            "error": f"{type(exc).__name__}: {exc}"[-2000:],
            "traceback": traceback.format_exc()[-4000:],
        }
        return None


def _generate(engine: Any) -> Any:
    return engine.generate(input_ids=PROMPT, sampling_params=SAMPLING)


def _bandwidth(engine: Any, named: list[tuple[str, Any]], size: int, rounds: int = 5) -> dict[str, Any]:
    """GB/s of the whole parameter set, facade (flattened buckets) and upstream (per-tensor
    handles) alternated in one run; medians with min/max and the ratio."""
    timings: dict[str, list[float]] = {"facade": [], "upstream": []}
    calls = {"facade": engine.update_weights_from_tensor, "upstream": engine.upstream.update_weights_from_tensor}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call(named)
            timings[name].append(time.perf_counter() - started)
    out: dict[str, Any] = {"rounds": rounds, "bytes": size}
    for name, seconds in timings.items():
        rates = sorted(size / s / 1e9 for s in seconds)
        out[name] = {
            "median_gbps": round(rates[len(rates) // 2], 2),
            "min": round(rates[0], 2),
            "max": round(rates[-1], 2),
        }
    out["facade_over_upstream"] = round(out["facade"]["median_gbps"] / out["upstream"]["median_gbps"], 3)
    return out


def _tokens(out: Any) -> list[int]:
    return list(out["output_ids"]) if isinstance(out, dict) else []


def run_smoke(
    out_dir: str, model_path: str | None = None, cpu: bool = False, server: bool = False, tp: int = 1
) -> dict[str, Any]:
    """The smoke run itself; call it from any thread (the CLI runs it off the main thread).
    ``tp`` > 1: one engine over that many GPUs (the policy and hooks checked in every scheduler)."""
    import torch

    pkg = import_module(".", __package__)  # this copy of the package (a vendored copy too)

    from .engine import Engine, nvidia_smi_meter
    from .server import ServerEngine

    os.makedirs(out_dir, exist_ok=True)
    os.environ[SMOKE_DIR_ENV] = out_dir
    pkg.add_child_hook(f"{__name__}:record_child_env")
    args = engine_args(model_path, cpu)
    if tp > 1:
        args["tp_size"] = tp
    # tp > 1: the ranks sit on different GPUs, so the tensors go through CPU shared memory
    device = "cpu" if cpu or tp > 1 else "cuda"
    with open(os.path.join(args["model_path"], "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    results: dict[str, Any] = {
        "thread": threading.current_thread().name,
        "main_thread": threading.current_thread() is threading.main_thread(),
        "sglang": pkg.SELECTION.installed.version,
        "family": pkg.FAMILY.name,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "model": os.path.basename(args["model_path"]),
        "mode": "server" if server else "engine",
        "tp": tp,
        "steps": {},
        "checks": {},
        "numbers": {},
    }
    # an allocator setting SGLang's children must not inherit (the policy removes it for them)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:False")
    facts = pkg.FAMILY.env
    worker = envpolicy.worker_from_args(args, "smoke-0", os.environ, facts)
    results["planned_env"] = {c.name: c.new for c in envpolicy.plan(args, os.environ, worker, facts=facts)}
    results["trainer_env"] = envpolicy.trainer_env(args, os.environ, facts)
    results["checks"]["ran_off_the_main_thread"] = not results["main_thread"]
    t0 = time.perf_counter()
    facade = ServerEngine if server else Engine
    engine = _step(results, "launch", lambda: facade(worker_name="smoke-0", **args))
    results["numbers"]["launch_s"] = round(time.perf_counter() - t0, 2)
    if engine is None:
        return results
    checks, numbers = results["checks"], results["numbers"]
    try:
        numbers["child_pids"] = engine._child_pids()
        first = _step(results, "generate_first", lambda: _generate(engine))
        numbers["generate_first_s"] = results["steps"]["generate_first"]["seconds"]
        again = _step(results, "generate_again", lambda: _generate(engine))
        numbers["generate_s"] = results["steps"]["generate_again"]["seconds"]
        checks["generate_returns_tokens"] = len(_tokens(first)) == SAMPLING["max_new_tokens"]
        checks["generate_repeatable"] = _tokens(first) == _tokens(again) != []

        weights_a = model_tensors(config, seed=1, device=device)
        weights_b = model_tensors(config, seed=2, device=device)
        if not cpu:
            torch.cuda.synchronize()
        size = _nbytes(weights_a)
        numbers["weight_set_bytes"] = size
        _step(results, "update_weights_a", lambda: engine.update_weights_from_tensor(weights_a))
        out_a = _step(results, "generate_a", lambda: _generate(engine))
        _step(results, "update_weights_a_again", lambda: engine.update_weights_from_tensor(weights_a))
        out_a2 = _step(results, "generate_a2", lambda: _generate(engine))
        if server:  # no upstream object over HTTP: the facade once more, with the other weights
            _step(results, "update_weights_b", lambda: engine.update_weights_from_tensor(weights_b))
        else:
            _step(results, "update_weights_b_upstream", lambda: engine.upstream.update_weights_from_tensor(weights_b))
        out_b = _step(results, "generate_b", lambda: _generate(engine))
        checks["weights_change_output"] = _tokens(out_a) != _tokens(first) and _tokens(out_b) != _tokens(out_a)
        checks["same_weights_same_output"] = _tokens(out_a) == _tokens(out_a2) != []
        numbers["tokens"] = {"dummy": _tokens(first), "a": _tokens(out_a), "b": _tokens(out_b)}
        numbers["update_bandwidth"] = None if server else _bandwidth(engine, weights_a, size)

        pids = engine._child_pids()
        before = nvidia_smi_meter(pids)
        released = _step(results, "release", engine.release_memory_occupation)
        after_release = nvidia_smi_meter(pids)
        _step(results, "resume", engine.resume_memory_occupation)
        after_resume = nvidia_smi_meter(pids)
        numbers["engine_gpu_bytes"] = {"before": before, "released": after_release, "resumed": after_resume}
        numbers["release_result"] = released
        if not cpu:
            freed = before is not None and after_release is not None and after_release < before * 0.5
            back = after_resume is not None and after_release is not None and after_resume > after_release
            checks["release_frees_memory"] = bool(freed)
            checks["resume_brings_it_back"] = bool(back)
        _step(results, "update_after_resume", lambda: engine.update_weights_from_tensor(weights_a))
        out_a3 = _step(results, "generate_after_resume", lambda: _generate(engine))
        checks["weights_after_resume"] = _tokens(out_a3) == _tokens(out_a) != []

        info = _step(results, "server_info", engine.get_server_info)
        version = pkg.SELECTION.installed.version
        checks["server_info_version"] = isinstance(info, dict) and info.get("version") == version
        results["capabilities"] = engine.capabilities()
        results["patches"] = {s.name: [s.state, s.reached] for s in pkg.status()}
    finally:
        _step(results, "shutdown", engine.shutdown)
    time.sleep(0.5)
    results["children_left"] = _children_left()
    checks["no_children_left"] = results["children_left"] == []
    if server:
        from .server import _group_alive, port_in_use

        process = engine.process
        checks["server_process_group_gone"] = process is not None and not _group_alive(process.pid)
        checks["server_port_free"] = not port_in_use("127.0.0.1", int(engine.url.rsplit(":", 1)[1]))
    _check_children(results, out_dir)
    results["ok"] = all(results["checks"].values()) and all(s["ok"] for s in results["steps"].values())
    return results


def _check_children(results: dict[str, Any], out_dir: str) -> None:
    records = []
    for name in sorted(os.listdir(out_dir)):
        if name.startswith("child-") and name.endswith(".json"):
            with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
                records.append(json.load(fh))
    results["children_seen"] = records
    schedulers = [r for r in records if r["role"] == "scheduler"]
    checks = results["checks"]
    checks["hook_ran_in_scheduler"] = bool(schedulers)
    if not schedulers:
        return
    results["scheduler_env"] = schedulers[0]["env"]
    env = schedulers[0]["env"]
    expected = workspace.worker_dirs(workspace.worker_slot("smoke-0", ()))["flashinfer"]
    tp = int(results.get("tp", 1))
    if tp > 1:  # every tensor-parallel rank is a scheduler child: each must carry the policy
        checks["hook_ran_in_every_scheduler"] = len(schedulers) == tp
        same = ("FLASHINFER_WORKSPACE_BASE", "NCCL_CUMEM_ENABLE", "NCCL_NVLS_ENABLE", "CUDA_DEVICE_MAX_CONNECTIONS")
        checks["policy_env_in_every_scheduler"] = all(
            s["env"].get("FLASHINFER_WORKSPACE_BASE") == str(expected)
            and all(s["env"].get(n) == env.get(n) for n in same)
            for s in schedulers
        )
    base = env.get("FLASHINFER_WORKSPACE_BASE") or ""
    checks["flashinfer_workspace_private"] = base == str(expected)
    try:
        st = os.stat(base)
        checks["flashinfer_workspace_0700"] = stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()
    except OSError:
        checks["flashinfer_workspace_0700"] = False
    checks["alloc_conf_removed_in_child"] = (
        os.environ.get("PYTORCH_CUDA_ALLOC_CONF") is not None and env.get("PYTORCH_CUDA_ALLOC_CONF") is None
    )
    # the trainer side of the policy must agree with what the scheduler really got (NCCL sync)
    checks["nccl_cumem_in_child_matches_trainer_env"] = env.get("NCCL_CUMEM_ENABLE") == results["trainer_env"].get(
        "NCCL_CUMEM_ENABLE"
    )
    planned = results["planned_env"]
    for name in ("CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_MODULE_LOADING", "TRTLLM_ENABLE_PDL", "NCCL_NVLS_ENABLE"):
        if name in planned:
            checks[f"{name.lower()}_in_child_as_planned"] = env.get(name) == planned[name]
    checks["block_nonzero_rank_children_0"] = env.get("SGLANG_BLOCK_NONZERO_RANK_CHILDREN") == "0"


LAUNCH_WAIT_S = 240.0


def _gpu_count() -> int:
    import torch

    return int(torch.cuda.device_count())


def run_two_engines(out_dir: str, model_path: str | None = None, cpu: bool = False) -> dict[str, Any]:
    """Two engines started at once from two threads of this process, laid out by the planner from
    ``device_mapping=[0, 1]``, ``num_gpus_per_worker=1`` (one GPU each; on ``cpu``, two CPU
    engines): each must generate and get its own private FlashInfer workspace and Triton cache."""
    from .engine import Engine
    from .roll.planner import plan_engines

    pkg = importlib.import_module(__package__ or "")
    os.makedirs(out_dir, exist_ok=True)
    os.environ[SMOKE_DIR_ENV] = out_dir
    pkg.add_child_hook(f"{__name__}:record_child_env")
    base = engine_args(model_path, cpu)
    base.pop("random_seed")
    plan = plan_engines(base, [0, 1], 1, role="rollout")
    layout = "cpu" if cpu else "one GPU each"
    launched = [threading.Event() for _ in plan.engines]
    stagger = False
    if not cpu and _gpu_count() < 2:
        # Only one GPU here: both engines share GPU 0, each with its planned ports and name.
        # SGLang's mem_fraction_static is a share of the GPU's *total* memory, checked against
        # what is free when the engine profiles: an engine that profiles after the other has
        # allocated 0.3 of the GPU needs a fraction above 0.3 itself. So the second engine waits
        # for the first to be up and takes 0.65 (0.35 of the GPU for itself).
        layout = "both on GPU 0 (one GPU visible): launched one after the other, mem_fraction_static 0.3 then 0.65"
        stagger = True
        for entry, fraction in zip(plan.engines, (0.3, 0.65), strict=True):
            entry.server_args["base_gpu_id"] = 0
            entry.server_args["mem_fraction_static"] = fraction
    results: dict[str, Any] = {
        "layout": layout,
        "plan": [e.as_dict() for e in plan.engines],
        "engines": {},
        "checks": {},
    }
    barrier = threading.Barrier(len(plan.engines))
    generate_together = threading.Barrier(len(plan.engines))

    def one(entry: Any) -> None:
        record: dict[str, Any] = {"thread": threading.current_thread().name}
        results["engines"][entry.worker_name] = record
        engine = None
        met = False
        try:
            barrier.wait()  # launch both at the same moment (or, staggered, wait for the previous)
            if stagger and entry.index > 0 and not launched[entry.index - 1].wait(timeout=LAUNCH_WAIT_S):
                raise TimeoutError(f"engine {entry.index - 1} was not up within {LAUNCH_WAIT_S} s")
            started = time.perf_counter()
            engine = Engine(worker_name=entry.worker_name, **entry.server_args)
            record["launch_s"] = round(time.perf_counter() - started, 2)
            launched[entry.index].set()
            record["child_pids"] = engine._child_pids()
            met = True
            generate_together.wait(timeout=LAUNCH_WAIT_S)  # both engines alive, generating at once
            record["tokens"] = _tokens(_generate(engine))
        except BaseException as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[-2000:]
        finally:
            launched[entry.index].set()  # never leave the next engine waiting on a failed one
            if not met:  # each thread meets the other exactly once
                try:
                    generate_together.wait(timeout=LAUNCH_WAIT_S)
                except threading.BrokenBarrierError:
                    pass
            if engine is not None:
                engine.shutdown()

    threads = [threading.Thread(target=one, args=(e,), name=f"rollout-{e.index}") for e in plan.engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    children = {}
    for name in os.listdir(out_dir):
        if name.startswith("child-") and name.endswith(".json"):
            with open(os.path.join(out_dir, name), encoding="utf-8") as fh:
                child = json.load(fh)
            children[child["pid"]] = child
    checks = results["checks"]
    workspaces = {}
    for worker, record in results["engines"].items():
        scheds = [children[p] for p in record.get("child_pids", []) if children.get(p, {}).get("role") == "scheduler"]
        record["scheduler_env"] = scheds[0]["env"] if scheds else None
        expected = workspace.worker_dirs(workspace.worker_slot(worker, ()))["flashinfer"]
        got = (record["scheduler_env"] or {}).get("FLASHINFER_WORKSPACE_BASE")
        workspaces[worker] = got
        checks[f"{worker}_generates"] = len(record.get("tokens", [])) == SAMPLING["max_new_tokens"]
        checks[f"{worker}_own_workspace"] = got == str(expected)
    checks["workspaces_distinct"] = len(set(workspaces.values())) == len(workspaces)
    checks["ports_distinct"] = len({e.server_args.get("port") for e in plan.engines}) == len(plan.engines)
    results["children_left"] = _children_left()
    checks["no_children_left"] = results["children_left"] == []
    results["ok"] = all(checks.values())
    return results


def _raw_receiver(port: int, backend: str, device: str, specs: list[tuple[list[int], str]]) -> None:
    """The other rank of the raw-broadcast baseline (a spawned process): receive, as SGLang does."""
    import torch
    from sglang.srt.utils import init_custom_process_group

    group = init_custom_process_group(
        backend=backend, init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=1, group_name="raw"
    )
    buffers = [torch.empty(shape, dtype=getattr(torch, dtype), device=device) for shape, dtype in specs]
    torch.distributed.broadcast(torch.zeros(1, device=device), src=0, group=group)  # ready
    for buffer in buffers:  # allocated up front: the timed loop is the transfer alone
        torch.distributed.broadcast(buffer, src=0, group=group)


def run_weight_sync(out_dir: str, model_path: str | None = None, cpu: bool = False) -> dict[str, Any]:
    """A trainer (this process, rank 0) pushes the whole parameter set to an engine through the
    facade's ``init_weights_update_group`` + ``update_weights_from_distributed`` (gloo on a CPU,
    NCCL with the trainer on GPU 0 and the engine on GPU 1), then the same bytes through a raw
    broadcast to a plain receiver process, in the same run; the engine's output must equal the
    output after pushing the same weights with ``update_weights_from_tensor``."""
    import multiprocessing

    import torch
    from sglang.srt.utils import init_custom_process_group

    from .engine import Engine
    from .server import free_port

    gpus = 0 if cpu else torch.cuda.device_count()
    if cpu:
        backend, trainer_device, receiver_device, engine_gpu = "gloo", "cpu", "cpu", None
    elif gpus >= 2:  # the layout RL uses: trainer on GPU 0, engine on GPU 1, NCCL between them
        backend, trainer_device, receiver_device, engine_gpu = "nccl", "cuda:0", "cuda:1", 1
    else:  # one GPU: NCCL refuses two ranks on one device, gloo carries the CUDA tensors
        backend, trainer_device, receiver_device, engine_gpu = "gloo", "cuda:0", "cuda:0", 0
    args = engine_args(model_path, cpu)
    if engine_gpu is not None:
        args["base_gpu_id"] = engine_gpu
    with open(os.path.join(args["model_path"], "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    results: dict[str, Any] = {
        "backend": backend,
        "gpus": gpus,
        "trainer_device": trainer_device,
        "engine_gpu": engine_gpu,
        "checks": {},
        "numbers": {},
    }
    engine = Engine(worker_name="wsync-0", **args)
    try:
        weights_a = model_tensors(config, seed=1, device=trainer_device)
        weights_b = model_tensors(config, seed=2, device=trainer_device)
        size = _nbytes(weights_a)
        results["numbers"]["bytes"] = size
        # the reference updates go by tensor, which the engine's scheduler loads from its own GPU
        # (a tensor on the trainer's GPU 0 is refused for an engine on GPU 1)
        engine_device = "cpu" if cpu else f"cuda:{engine_gpu}"
        engine.update_weights_from_tensor([(n, t.to(engine_device)) for n, t in weights_a])
        tokens_a = _tokens(_generate(engine))
        engine.update_weights_from_tensor([(n, t.to(engine_device)) for n, t in weights_b])
        tokens_b = _tokens(_generate(engine))

        port = free_port()
        joined: dict[str, Any] = {}
        joiner = threading.Thread(
            target=lambda: joined.update(
                r=engine.init_weights_update_group("127.0.0.1", port, 1, 2, "wsync", backend=backend)
            )
        )
        joiner.start()
        group = init_custom_process_group(
            backend=backend, init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=0, group_name="wsync"
        )
        joiner.join()
        results["checks"]["group_joined"] = bool(joined.get("r", (False,))[0])
        names = [n for n, _ in weights_a]
        dtypes = [str(t.dtype).removeprefix("torch.") for _, t in weights_a]
        shapes = [list(t.shape) for _, t in weights_a]
        received: dict[str, Any] = {}
        updater = threading.Thread(
            target=lambda: received.update(r=engine.update_weights_from_distributed(names, dtypes, shapes, "wsync"))
        )
        if not cpu:
            torch.cuda.synchronize()
        started = time.perf_counter()
        updater.start()
        for _, tensor in weights_a:
            torch.distributed.broadcast(tensor, src=0, group=group)
        updater.join()
        facade_s = time.perf_counter() - started
        tokens_dist = _tokens(_generate(engine))
        results["checks"]["distributed_update_ok"] = bool(received.get("r", (False,))[0])
        results["checks"]["same_output_as_tensor_update"] = tokens_dist == tokens_a != []
        results["checks"]["output_changed"] = tokens_dist != tokens_b
        results["numbers"]["facade_gbps"] = round(size / facade_s / 1e9, 3)

        ctx = multiprocessing.get_context("spawn")
        raw_port = free_port()
        specs = [(list(t.shape), str(t.dtype).removeprefix("torch.")) for _, t in weights_a]
        receiver = ctx.Process(target=_raw_receiver, args=(raw_port, backend, receiver_device, specs))
        receiver.start()
        raw_group = init_custom_process_group(
            backend=backend, init_method=f"tcp://127.0.0.1:{raw_port}", world_size=2, rank=0, group_name="raw"
        )
        torch.distributed.broadcast(torch.zeros(1, device=trainer_device), src=0, group=raw_group)  # ready
        started = time.perf_counter()
        for _, tensor in weights_a:
            torch.distributed.broadcast(tensor, src=0, group=raw_group)
        if not cpu:
            torch.cuda.synchronize()
        raw_s = time.perf_counter() - started
        receiver.join(timeout=300)
        results["numbers"]["raw_broadcast_gbps"] = round(size / raw_s / 1e9, 3)
        results["numbers"]["facade_over_raw"] = round(raw_s / facade_s, 3)
        results["checks"]["raw_receiver_ok"] = receiver.exitcode == 0
    finally:
        engine.shutdown()
    results["children_left"] = _children_left()
    results["checks"]["no_children_left"] = results["children_left"] == []
    results["ok"] = all(results["checks"].values())
    return results


def run_baseline(model_path: str | None, patched: bool) -> dict[str, Any]:
    """One launch of the raw upstream Engine (main thread), with or without the shim's patches."""
    pkg = import_module(".", __package__)  # this copy of the package (a vendored copy too)

    if not patched:
        pkg.unpatch()
    from sglang.srt.entrypoints.engine import Engine as Upstream

    args = engine_args(model_path)
    started = time.perf_counter()
    engine = Upstream(**args)
    launch_s = time.perf_counter() - started
    engine.shutdown()
    return {"patched": patched, "launch_s": round(launch_s, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sglang_roll_compat smoke", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="smoke-results", help="directory for the JSON results and child records")
    parser.add_argument("--model-path", default=None, help="a model directory (default: the shipped small Qwen2)")
    parser.add_argument("--baseline", choices=["unpatched", "patched"], help="time one raw upstream launch instead")
    parser.add_argument("--cpu", action="store_true", help="dry run on a CPU machine (no memory checks)")
    parser.add_argument("--server", action="store_true", help="through ServerEngine (SGLang's HTTP server)")
    parser.add_argument("--two-engines", action="store_true", help="two engines from two threads (GPUs 0 and 1)")
    parser.add_argument("--weight-sync", action="store_true", help="trainer rank 0 -> engine over a process group")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel size of the smoke's engine (GPUs)")
    args = parser.parse_args(argv)
    if args.baseline:
        result = run_baseline(args.model_path, patched=args.baseline == "patched")
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"baseline-{args.baseline}.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(result) + "\n")
        print(json.dumps(result))
        return 0
    if args.two_engines or args.weight_sync:
        run = run_two_engines if args.two_engines else run_weight_sync
        result = run(args.out, args.model_path, args.cpu)
        name = "two-engines.json" if args.two_engines else "weight-sync.json"
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2, default=str)
        print(json.dumps(result, indent=2, default=str))
        return 0 if result.get("ok") else 1
    holder: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: holder.update(run_smoke(args.out, args.model_path, args.cpu, args.server, args.tp)),
        name="rollout-worker-0",
    )
    worker.start()
    worker.join()
    name = ("smoke-server" if args.server else "smoke") + (f"-tp{args.tp}" if args.tp > 1 else "") + ".json"
    with open(os.path.join(args.out, name), "w", encoding="utf-8") as fh:
        json.dump(holder, fh, indent=2, default=str)
    print(json.dumps(holder, indent=2, default=str))
    return 0 if holder.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
