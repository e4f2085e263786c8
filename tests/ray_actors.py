"""Ray actors for tests/test_ray.py (a module, so Ray's workers import it by name).

Nothing here imports ``sglang_roll_compat`` at module level: the control actor must run SGLang
exactly as it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from typing import Any

PROMPT = [1, 2, 3, 4, 5]


def progress(step: str) -> None:
    """One line per step into ``$SRC_RAY_PROGRESS`` (the test prints it when a call times out)."""
    path = os.environ.get("SRC_RAY_PROGRESS")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} pid={os.getpid()} {step}\n")


def _engine_pids() -> list[int]:
    """This worker's SGLang processes (its children, but not multiprocessing's resource tracker)."""
    import psutil

    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "resource_tracker" not in cmd:
            out.append(child.pid)
    return sorted(out)


def _alive(pids: list[int]) -> list[int]:
    import psutil

    left = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                left.append(pid)
        except psutil.Error:
            continue
    return left


def _model_tensors(model_path: str, seed: int) -> list[tuple[str, Any]]:
    from sglang_roll_compat.smoke import model_tensors

    with open(os.path.join(model_path, "config.json"), encoding="utf-8") as fh:
        config = json.load(fh)
    return model_tensors(config, seed=seed, device="cpu")


class RawEngineActor:
    """An async actor (its methods run in an event loop off the main thread), as ROLL's."""

    async def where(self) -> dict[str, Any]:
        return {"main_thread": threading.current_thread() is threading.main_thread(), "pid": os.getpid()}

    async def launch_unpatched(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The control: SGLang's Engine without our package."""
        import sys

        from sglang.srt.entrypoints.engine import Engine

        try:
            Engine(**cfg).shutdown()
            outcome: dict[str, Any] = {"raised": None}
        except BaseException as exc:
            outcome = {"raised": type(exc).__name__, "message": str(exc)}
        outcome["ours_imported"] = "sglang_roll_compat" in sys.modules
        outcome["main_thread"] = threading.current_thread() is threading.main_thread()
        outcome["engine_pids_left"] = _alive(_engine_pids())
        return outcome

    async def roll_sequence(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """ROLL's strategy, call for call, on SGLang's own Engine with our package imported."""
        import roll_pattern as roll
        from sglang.srt.utils import init_custom_process_group

        from sglang_roll_compat.server import free_port

        out: dict[str, Any] = {"main_thread": threading.current_thread() is threading.main_thread()}
        module = roll.engine_module()
        started = time.monotonic()
        progress("roll: launching")
        engine = roll.launch(module, cfg)
        progress("roll: launched")
        out["launch_s"] = round(time.monotonic() - started, 1)
        out["engine_class"] = f"{type(engine).__module__}.{type(engine).__qualname__}"
        pids = _engine_pids()
        try:
            params = roll.sampling_params(8)
            batch = await roll.batch_generate(engine, [PROMPT, [6, 7, 8]], params, logprob=True)
            out["batch_lengths"] = [len(o["output_ids"]) for o in batch]
            out["batch_logprobs"] = [len(o["meta_info"]["output_token_logprobs"]) for o in batch]
            one = await roll.generate_one(engine, "roll-0", PROMPT, params)
            out["one"] = one
            progress("roll: generated")
            aborted = await roll.abort_all_while_generating(
                engine, [[9, 10], [11], [12, 13]], roll.sampling_params(2000)
            )
            out["abort"] = {
                "aborted": sorted(aborted["aborted"]),
                "finish_reasons": [r["finish_reason"] for r in aborted["results"]],
                "tokens": [len(r["output_ids"]) for r in aborted["results"]],
                "left": aborted["left"],
            }
            progress("roll: aborted")
            await roll.offload(engine)
            await roll.load(engine, ["weights", "kv_cache"])
            out["after_load"] = (await roll.generate_one(engine, "roll-1", PROMPT, params))["output_ids"]
            progress("roll: offloaded and loaded")
            # colocated update: ROLL's flattened bucket, twice with different weights
            results = []
            tokens = []
            for seed in (1, 2):
                named = _model_tensors(cfg["model_path"], seed)
                results.append(list(await roll.update_in_bucket(engine, roll.bucket_payload(named), tp=1)))
                await engine.tokenizer_manager.flush_cache()
                tokens.append((await roll.generate_one(engine, f"roll-w{seed}", PROMPT, params))["output_ids"])
            out["bucket_results"] = [r[0] for r in results]
            out["bucket_tokens"] = tokens
            progress("roll: bucket updates")
            # broadcast update: the trainer is rank 0 (a thread here), weights of seed 1 again
            port = free_port()
            group = "roll_broadcast"
            trainer: dict[str, Any] = {}
            named = _model_tensors(cfg["model_path"], 1)

            def trainer_rank0() -> None:
                try:
                    trainer["pg"] = init_custom_process_group(
                        backend="gloo", init_method=f"tcp://127.0.0.1:{port}", world_size=2, rank=0, group_name=group
                    )
                except BaseException as exc:
                    trainer["error"] = repr(exc)

            t = threading.Thread(target=trainer_rank0)
            t.start()
            joined = await roll.setup_collective_group(engine, "127.0.0.1", port, group, "gloo")
            t.join(timeout=60)
            out["group_joined"] = bool(joined[0])
            if joined[0] and "pg" in trainer:
                await _broadcast(engine, named, group, trainer["pg"], out)
                out["broadcast_tokens"] = (await roll.generate_one(engine, "roll-b", PROMPT, params))["output_ids"]
            else:  # a broadcast to no group would kill SGLang's scheduler (an assert there)
                out["group_error"] = {"engine": str(joined[1]), "trainer": str(trainer.get("error"))}
                # the engine answered the failed join and still serves
                out["after_group_error"] = (await roll.generate_one(engine, "roll-g", PROMPT, params))["output_ids"]
        except asyncio.CancelledError as exc:  # the shim interrupts a task waiting on a dead engine
            out["cancelled"] = " ".join(str(a) for a in exc.args)[-3000:]
            progress(f"roll: cancelled: {out['cancelled'][:300]}")
        finally:
            engine.shutdown()
        await asyncio.sleep(0.5)
        out["engine_pids"] = len(pids)
        out["engine_pids_left"] = _alive(pids)
        return out


async def _broadcast(engine: Any, named: list[tuple[str, Any]], group: str, pg: Any, out: dict[str, Any]) -> None:
    import roll_pattern as roll
    import torch

    def send() -> None:
        for _, tensor in named:
            torch.distributed.broadcast(tensor, src=0, group=pg)

    sender = threading.Thread(target=send)
    sender.start()
    updated = await roll.broadcast_parameter(engine, named, group)
    sender.join(timeout=60)
    out["broadcast_result"] = bool(updated[0])
    await engine.tokenizer_manager.flush_cache()
    progress("roll: broadcast")


class FacadeActor:
    """A threaded actor (``max_concurrency > 1``): sync methods on a pool of threads."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.pids: list[int] = []

    def start(self, cfg: dict[str, Any], worker_name: str) -> dict[str, Any]:
        from sglang_roll_compat import Engine

        started = time.monotonic()
        progress(f"facade {worker_name}: launching")
        self.engine = Engine(worker_name=worker_name, **cfg)
        progress(f"facade {worker_name}: launched")
        self.pids = _engine_pids()
        return {
            "launch_s": round(time.monotonic() - started, 1),
            "pids": len(self.pids),
            "main_thread": threading.current_thread() is threading.main_thread(),
        }

    def generate(self, max_new_tokens: int = 8) -> list[int]:
        out = self.engine.generate(
            input_ids=PROMPT, sampling_params={"max_new_tokens": max_new_tokens, "temperature": 0.0}
        )
        return list(out["output_ids"])

    def release(self) -> Any:
        return self.engine.release_memory_occupation()

    def resume(self) -> Any:
        return self.engine.resume_memory_occupation()

    def shutdown(self) -> dict[str, Any]:
        self.engine.shutdown()
        time.sleep(0.5)
        return {"left": _alive(self.pids), "closed": self.engine.closed}

    def wait_on_long_request(self) -> dict[str, Any]:
        """A request that waits (1900 tokens: tens of seconds on a CPU); returns how it ended."""
        from sglang_roll_compat import EngineDeadError

        try:
            self.generate(max_new_tokens=1900)  # the context is 2048
            return {"error": None, "at": time.time()}
        except EngineDeadError as exc:
            return {"error": "EngineDeadError", "message": str(exc)[:300], "at": time.time()}
        except BaseException as exc:
            return {"error": type(exc).__name__, "message": str(exc)[:300], "at": time.time()}

    def kill_scheduler(self) -> dict[str, Any]:
        import psutil

        for pid in self.pids:
            try:
                if "scheduler" in " ".join(psutil.Process(pid).cmdline()):
                    os.kill(pid, signal.SIGKILL)
                    return {"killed": pid, "at": time.time()}
            except psutil.Error:
                continue
        return {"killed": None, "at": time.time()}

    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "thread": threading.current_thread().name}


class TrainerActor:
    def env(self, names: list[str]) -> dict[str, str | None]:
        return {n: os.environ.get(n) for n in names}
