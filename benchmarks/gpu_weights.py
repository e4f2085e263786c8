"""Weight sync, memory release and facade overhead on a real engine (issue 16), one run:

    python -m benchmarks.gpu_weights --out DIR            # the GPU machine (tools/gpu_e2e.sh)
    python -m benchmarks.gpu_weights --out DIR --cpu      # a dry run on a CPU (SGLang 0.5.2)

Per model (the shipped ``small-qwen2``, 221 MB, and ``qwen2-7b-shape``, 15.2 GB; dummy
weights, the trainer's tensors on the engine's GPU: colocated), in interleaved rounds, the same
tensors for every path:

* ``d2d``: ``dst.copy_(src)`` of the same bytes as one buffer (the physical limit), and
  ``d2d_per_tensor``: the same per tensor;
* ``facade``: ``Engine.update_weights_from_tensor`` (default bucket size) and a sweep of
  ``bucket_bytes``;
* ``upstream_per_tensor``: upstream's ``Engine.update_weights_from_tensor`` (IPC handle per
  tensor); ``slime_512MB``: 512 MB flattened buckets sent one after the other (slime's way);
* every update path is checked with ``verify_weights`` in the first and the last round (the
  weight set alternates between two seeds, so a path that loaded nothing fails);
* a profile of each call: a child hook times, inside the scheduler, its handler (GPU work
  included: the hook synchronizes before it stops the clock, for every path alike), the
  deserialization (IPC handles opened), the model's ``load_weights`` and the cache flush;
* ``release_memory_occupation`` / ``resume_memory_occupation``: ms per GiB freed, facade and
  upstream;
* facade overhead (small model): facade vs upstream, paired per round, for a 1-token generate,
  flush, abort and release+resume.

Results go to ``DIR/gpu-weights.json`` after every section (a late failure keeps the rest).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROFILE_ENV = "SGLANG_ROLL_COMPAT_BENCH_PROFILE_DIR"
GiB = 1 << 30
MiB = 1 << 20
logger = logging.getLogger("benchmarks.gpu_weights")

# -- the scheduler-side profile (a child hook) -----------------------------------------------------
# (module, class, method, label, synchronize before stopping the clock)
_TIMED = (
    (
        "sglang.srt.managers.scheduler_components.weight_updater",
        "SchedulerWeightUpdaterManager",
        "update_weights_from_tensor",
        "scheduler",
        True,
    ),
    (
        "sglang.srt.managers.scheduler_update_weights_mixin",
        "SchedulerUpdateWeightsMixin",
        "update_weights_from_tensor",
        "scheduler",
        True,
    ),
    (
        "sglang.srt.managers.scheduler_components.weight_updater",
        "SchedulerWeightUpdaterManager",
        "flush_cache_after_weight_update",
        "flush_after_update",
        False,
    ),
    ("sglang.srt.managers.scheduler", "Scheduler", "flush_cache", "flush_cache", False),  # inside the one above
    ("sglang.srt.managers.tp_worker", "TpModelWorker", "update_weights_from_tensor", "tp_worker", False),
    ("sglang.srt.models.qwen2", "Qwen2ForCausalLM", "load_weights", "load_weights", False),
)


def arm_profile() -> None:
    """Child hook: time the weight-update path inside this scheduler; records go to
    ``$SGLANG_ROLL_COMPAT_BENCH_PROFILE_DIR/profile-<pid>.jsonl``."""
    import importlib

    directory = os.environ.get(PROFILE_ENV)
    if not directory:
        return
    import torch

    path = os.path.join(directory, f"profile-{os.getpid()}.jsonl")
    cuda = torch.cuda.is_available()
    armed = []

    def timed(func: Callable[..., Any], label: str, sync: bool) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            wall, started = time.time(), time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                if sync and cuda:
                    torch.cuda.synchronize()
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"what": label, "t": wall, "s": time.perf_counter() - started}) + "\n")

        return wrapper

    for module_name, class_name, method, label, sync in _TIMED:
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if method in vars(cls):
            setattr(cls, method, timed(vars(cls)[method], label, sync))
            armed.append(f"{class_name}.{method}")
    from sglang_roll_compat import weightprobe  # verify_weights: this rank's share of an answer

    weightprobe.answer_rank = timed(weightprobe.answer_rank, "verify_answer_rank", True)
    armed.append("weightprobe.answer_rank")
    try:
        serializer = importlib.import_module("sglang.srt.managers.tp_worker").MultiprocessingSerializer
        serializer.deserialize = staticmethod(timed(serializer.deserialize, "deserialize", False))
        armed.append("MultiprocessingSerializer.deserialize")
    except (ImportError, AttributeError):
        pass
    with open(os.path.join(directory, f"armed-{os.getpid()}.json"), "w", encoding="utf-8") as fh:
        json.dump(armed, fh)


class Profile:
    """The child hook's records, summed per label over a window of wall-clock time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def records(self) -> list[dict[str, Any]]:
        out = []
        for path in self.directory.glob("profile-*.jsonl"):
            out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return out

    def armed(self) -> list[str]:
        names: set[str] = set()
        for path in self.directory.glob("armed-*.json"):
            names.update(json.loads(path.read_text()))
        return sorted(names)

    def between(self, records: Sequence[dict[str, Any]], start: float, end: float) -> dict[str, float]:
        sums: dict[str, float] = {}
        for rec in records:
            if start <= rec["t"] <= end:
                sums[rec["what"]] = sums.get(rec["what"], 0.0) + rec["s"]
        return sums


# -- helpers -------------------------------------------------------------------------------------------
def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _rates(size: int, seconds: Sequence[float]) -> dict[str, Any]:
    if not seconds:
        return {}
    rates = sorted(size / s / 1e9 for s in seconds)
    return {
        "median_s": round(statistics.median(seconds), 6),
        "gbps": round(statistics.median(rates), 2),
        "gbps_min": round(rates[0], 2),
        "gbps_max": round(rates[-1], 2),
        "n": len(seconds),
    }


def _sync(torch: Any, cpu: bool) -> None:
    if not cpu:
        torch.cuda.synchronize()


class Run:
    def __init__(self, out: Path, cpu: bool, deadline: float) -> None:
        self.out, self.cpu, self.deadline = out, cpu, deadline
        self.results: dict[str, Any] = {"errors": []}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        (self.out / "gpu-weights.json").write_text(json.dumps(self.results, indent=1, default=str))

    def section(self, where: dict[str, Any], name: str, func: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        logger.info("== %s (%.0f s left)", name, self.left())
        try:
            value = func()
            where[name] = value
            return value
        except BaseException as exc:
            self.results["errors"].append(
                {
                    "section": name,
                    "error": f"{type(exc).__name__}: {exc}"[-1500:],
                    "traceback": traceback.format_exc()[-4000:],
                }
            )
            logger.exception("%s failed", name)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return None
        finally:
            logger.info("   %s: %.1f s", name, time.perf_counter() - started)
            self.save()


def _update_paths(engine: Any, buckets_mb: Sequence[int]) -> dict[str, Callable[[list[tuple[str, Any]]], Any]]:
    import importlib

    from sglang_roll_compat import weightbuckets
    from sglang_roll_compat.capabilities import _flattened_bucket

    up = engine.upstream
    serializer = importlib.import_module("sglang.srt.entrypoints.engine").MultiprocessingSerializer
    tp = int(getattr(up.server_args, "tp_size", 1))
    bucket_cls = _flattened_bucket()

    def slime(named: list[tuple[str, Any]]) -> Any:
        buckets = weightbuckets.plan(named, 512 * MiB)
        result = None
        for i, bucket in enumerate(buckets):
            payload = weightbuckets.flatten(bucket_cls, bucket)
            result = up.update_weights_from_tensor(
                [serializer.serialize(payload) for _ in range(tp)],
                load_format="flattened_bucket",
                flush_cache=i == len(buckets) - 1,
            )
        weightbuckets.release_ipc_memory(named)
        return result

    paths: dict[str, Callable[[list[tuple[str, Any]]], Any]] = {
        "facade": engine.update_weights_from_tensor,
        "upstream_per_tensor": up.update_weights_from_tensor,
    }
    if bucket_cls is not None:
        paths["slime_512MB"] = slime
    for mb in buckets_mb:
        paths[f"facade_{mb}MB"] = lambda named, _b=mb * MiB: engine.update_weights_from_tensor(named, bucket_bytes=_b)
    return paths


def _ok(result: Any) -> bool:
    if isinstance(result, tuple):
        return bool(result[0])
    if isinstance(result, dict):
        return bool(result.get("success", True))
    return result is None or bool(result)


def bench_updates(
    run: Run, engine: Any, model: str, config: dict[str, Any], buckets_mb: Sequence[int], profile: Profile, rounds: int
) -> dict[str, Any]:
    import torch

    device = "cpu" if run.cpu else f"cuda:{torch.cuda.current_device()}"
    from sglang_roll_compat.smoke import model_tensors

    sets = [model_tensors(config, 1, device, draw_on=device), model_tensors(config, 2, device, draw_on=device)]
    size = sum(t.numel() * t.element_size() for _, t in sets[0])
    paths = _update_paths(engine, buckets_mb)
    out: dict[str, Any] = {"bytes": size, "tensors": len(sets[0]), "rounds": rounds, "paths": {}}

    # the limit: the same bytes copied on the device, as one buffer and per tensor
    # (one buffer pair, then the per-tensor copies: at 15 GB both at once would not fit beside
    # the engine and the two weight sets)
    d2d: dict[str, list[float]] = {"d2d": [], "d2d_per_tensor": []}
    flat_src = torch.cat([t.reshape(-1) for _, t in sets[0]])
    flat_dst = torch.empty_like(flat_src)
    for _ in range(rounds):
        _sync(torch, run.cpu)
        t0 = time.perf_counter()
        flat_dst.copy_(flat_src)
        _sync(torch, run.cpu)
        d2d["d2d"].append(time.perf_counter() - t0)
    del flat_src, flat_dst
    per_dst = [torch.empty_like(t) for _, t in sets[1]]
    for _ in range(rounds):
        _sync(torch, run.cpu)
        t0 = time.perf_counter()
        for dst, (_, src) in zip(per_dst, sets[0], strict=True):
            dst.copy_(src)
        _sync(torch, run.cpu)
        d2d["d2d_per_tensor"].append(time.perf_counter() - t0)
    del per_dst
    if not run.cpu:
        torch.cuda.empty_cache()
    for name, secs in d2d.items():
        out["paths"][name] = _rates(size, secs)
    limit = out["paths"]["d2d"]["gbps"]

    # client-side preparation alone (plan + flatten, synchronized), per bucket size; not the
    # serialization: a CUDA tensor shared for IPC stays allocated until a receiver releases it
    from sglang_roll_compat import weightbuckets
    from sglang_roll_compat.capabilities import _flattened_bucket

    bucket_cls = _flattened_bucket()
    prep: dict[str, Any] = {}
    if bucket_cls is not None:
        for mb in [weightbuckets.DEFAULT_BUCKET_BYTES // MiB, *buckets_mb]:
            secs = []
            for _ in range(3):
                _sync(torch, run.cpu)
                t0 = time.perf_counter()
                for bucket in weightbuckets.plan(sets[0], mb * MiB):
                    weightbuckets.flatten(bucket_cls, bucket)
                _sync(torch, run.cpu)
                secs.append(time.perf_counter() - t0)
            prep[f"{mb}MB"] = round(statistics.median(secs), 6)
    out["client_prep_s"] = prep

    # warm-up: every path once
    for call in paths.values():
        call(sets[0])
    timings: dict[str, list[float]] = {name: [] for name in paths}
    windows: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    verifies: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    failures: list[str] = []
    names = list(paths)
    counter = 0
    for r in range(rounds):
        if run.left() < 60:
            out["stopped_early_after_rounds"] = r
            break
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            weights = sets[counter % 2]
            counter += 1
            wall = time.time()
            t0 = time.perf_counter()
            result = paths[name](weights)
            seconds = time.perf_counter() - t0
            if not _ok(result):
                failures.append(f"{name}: {result}")
            timings[name].append(seconds)
            windows[name].append((wall, wall + seconds))
            if r in (0, rounds - 1):
                t0 = time.perf_counter()
                try:
                    report = engine.verify_weights(weights)
                except Exception as exc:
                    verifies[name].append({"ok": False, "error": f"{type(exc).__name__}: {exc}"[-1500:]})
                    continue
                verifies[name].append(
                    {
                        "ok": report.ok,
                        "matched": len(report.matched),
                        "mismatched": len(report.mismatched),
                        "unknown": len(report.unknown),
                        "missing": len(report.missing),
                        "seconds": round(time.perf_counter() - t0, 6),
                        "detail": "" if report.ok else str(report)[:1500],
                    }
                )
    records = profile.records()
    for name in paths:
        row = _rates(size, timings[name])
        row["of_limit"] = round(row["gbps"] / limit, 4) if row and limit else None
        parts: dict[str, list[float]] = {}
        for start, end in windows[name]:
            for label, secs in profile.between(records, start, end).items():
                parts.setdefault(label, []).append(secs)
        row["scheduler_profile_median_s"] = {k: round(statistics.median(v), 6) for k, v in sorted(parts.items())}
        if "scheduler" in parts and len(parts["scheduler"]) == len(timings[name]):
            outside = [t - s for t, s in zip(timings[name], parts["scheduler"], strict=True)]
            row["outside_scheduler_median_s"] = round(statistics.median(outside), 6)
        row["verify"] = verifies[name]
        out["paths"][name] = row
    out["failures"] = failures
    out["all_verified"] = all(v["ok"] for rows in verifies.values() for v in rows) and all(verifies.values())
    facade = out["paths"].get("facade", {})
    ver = [v["seconds"] for v in verifies.get("facade", []) if "seconds" in v]
    if facade.get("median_s") and ver:
        out["verify_over_update"] = round(statistics.median(ver) / facade["median_s"], 4)
    out["profile_armed"] = profile.armed()
    # verify_weights, taken apart: the trainer-side fingerprints alone, and the scheduler's share
    from sglang_roll_compat import weightprobe

    local = []
    for _ in range(3):
        _sync(torch, run.cpu)
        t0 = time.perf_counter()
        weightprobe.fingerprints(t for _, t in sets[0])
        local.append(time.perf_counter() - t0)
    out["verify_trainer_fingerprints_s"] = round(statistics.median(local), 6)
    answers = [r["s"] for r in profile.records() if r["what"] == "verify_answer_rank"]
    out["verify_scheduler_answer_s"] = {
        "median": round(statistics.median(answers), 6) if answers else None,
        "n": len(answers),
    }
    del sets
    if not run.cpu:
        torch.cuda.empty_cache()
    return out


def _free_bytes(torch: Any, cpu: bool) -> int | None:
    return None if cpu else int(torch.cuda.mem_get_info()[0])


def bench_memory(run: Run, engine: Any, config: dict[str, Any], rounds: int) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    callers = {
        "facade": (engine.release_memory_occupation, engine.resume_memory_occupation),
        "upstream": (engine.upstream.release_memory_occupation, engine.upstream.resume_memory_occupation),
    }
    rows: dict[str, dict[str, list[float]]] = {
        k: {"release_s": [], "resume_s": [], "freed": [], "back": []} for k in callers
    }
    for r in range(rounds):
        for name in list(callers) if r % 2 == 0 else list(callers)[::-1]:
            release, resume = callers[name]
            before = _free_bytes(torch, run.cpu)
            t0 = time.perf_counter()
            release()
            rows[name]["release_s"].append(time.perf_counter() - t0)
            mid = _free_bytes(torch, run.cpu)
            t0 = time.perf_counter()
            resume()
            rows[name]["resume_s"].append(time.perf_counter() - t0)
            after = _free_bytes(torch, run.cpu)
            if before is not None and mid is not None and after is not None:
                rows[name]["freed"].append(mid - before)
                rows[name]["back"].append(mid - after)
    for name, row in rows.items():
        freed = _median(row["freed"])
        rel, res = _median(row["release_s"]), _median(row["resume_s"])
        out[name] = {
            "release_ms": round(rel * 1e3, 2) if rel else None,
            "resume_ms": round(res * 1e3, 2) if res else None,
            "freed_gib": round(freed / GiB, 3) if freed else None,
            "release_ms_per_gib": round(rel * 1e3 / (freed / GiB), 3) if rel and freed else None,
            "resume_ms_per_gib": round(res * 1e3 / (freed / GiB), 3) if res and freed else None,
            "n": rounds,
        }
    # after the last resume the weights are garbage: push, generate, verify (what an RL step does)
    device = "cpu" if run.cpu else f"cuda:{torch.cuda.current_device()}"
    from sglang_roll_compat.smoke import model_tensors

    weights = model_tensors(config, 3, device, draw_on=device)
    engine.update_weights_from_tensor(weights)
    out["verify_after_resume_and_push"] = engine.verify_weights(weights).ok
    del weights
    return out


PROMPT = list(range(1, 17))


def bench_overhead(run: Run, engine: Any, rounds: int) -> dict[str, Any]:
    """Facade vs upstream on the same engine, paired per round, order alternating."""
    up = engine.upstream
    one = {"max_new_tokens": 1, "temperature": 0.0, "ignore_eos": True}
    meter = engine._meter

    def facade_release_resume_unverified() -> None:
        engine._meter = lambda pids: None  # bench only: the release without its nvidia-smi check
        try:
            engine.release_memory_occupation()
            engine.resume_memory_occupation()
        finally:
            engine._meter = meter

    ops: dict[str, tuple[Callable[[], Any], Callable[[], Any], int]] = {
        "generate_1_token": (
            lambda: engine.generate(input_ids=PROMPT, sampling_params=one),
            lambda: up.generate(input_ids=PROMPT, sampling_params=one),
            40,
        ),
        "flush_cache": (engine.flush_cache, up.flush_cache, 40),
        "abort_all": (engine.abort, lambda: up.tokenizer_manager.abort_request(abort_all=True), 40),
        "release_resume": (
            lambda: (engine.release_memory_occupation(), engine.resume_memory_occupation()),
            lambda: (up.release_memory_occupation(), up.resume_memory_occupation()),
            10,
        ),
        "release_resume_unverified": (
            facade_release_resume_unverified,
            lambda: (up.release_memory_occupation(), up.resume_memory_occupation()),
            10,
        ),
    }
    if run.cpu:
        ops = {k: v for k, v in ops.items() if not k.startswith("release")}
    out: dict[str, Any] = {}
    for name, (facade, upstream, n) in ops.items():
        if run.left() < 45:
            out[name] = "skipped: out of time"
            continue
        facade(), upstream()  # warm
        f_s: list[float] = []
        u_s: list[float] = []
        for r in range(max(n, rounds)):
            pair = [(facade, f_s), (upstream, u_s)]
            for call, sink in pair if r % 2 == 0 else pair[::-1]:
                t0 = time.perf_counter()
                call()
                sink.append(time.perf_counter() - t0)
        ratios = [f / u for f, u in zip(f_s, u_s, strict=True)]
        out[name] = {
            "facade_median_ms": round(statistics.median(f_s) * 1e3, 4),
            "upstream_median_ms": round(statistics.median(u_s) * 1e3, 4),
            "added_ms": round((statistics.median(f_s) - statistics.median(u_s)) * 1e3, 4),
            "ratio_median_per_round": round(statistics.median(ratios), 4),
            "n": len(f_s),
        }
    return out


def bench_model(
    run: Run, model: str, buckets_mb: Sequence[int], rounds: int, memory_rounds: int, overhead: bool
) -> dict[str, Any]:
    import torch

    from sglang_roll_compat import Engine, add_child_hook
    from sglang_roll_compat.models import qwen2_7b_shape_path, small_model_path, tiny_model_path
    from sglang_roll_compat.smoke import engine_args

    path = {"small": small_model_path, "7b": qwen2_7b_shape_path, "tiny": tiny_model_path}[model]()
    config = json.loads((Path(path) / "config.json").read_text())
    profile_dir = run.out / f"profile-{model}"
    profile_dir.mkdir(parents=True, exist_ok=True)
    os.environ[PROFILE_ENV] = str(profile_dir)
    add_child_hook("benchmarks.gpu_weights:arm_profile")
    args = engine_args(path, cpu=run.cpu)
    if model == "7b":
        args["mem_fraction_static"] = 0.3  # 42 GB of an H200: 15.2 GB weights + KV cache
        args["context_length"] = 4096
    from sglang_roll_compat import memmeter

    result: dict[str, Any] = {"model": model, "config": path, "nvml": memmeter._started_nvml() is not None}
    t0 = time.perf_counter()
    engine = Engine(**args)
    result["launch_s"] = round(time.perf_counter() - t0, 2)
    try:
        t0 = time.perf_counter()
        engine.generate(input_ids=PROMPT, sampling_params={"max_new_tokens": 2, "temperature": 0.0})
        result["first_generate_s"] = round(time.perf_counter() - t0, 2)
        run.section(
            result,
            "updates",
            lambda: bench_updates(run, engine, model, config, buckets_mb, Profile(profile_dir), rounds),
        )
        if not run.cpu and memory_rounds:
            run.section(result, "memory", lambda: bench_memory(run, engine, config, memory_rounds))
        if overhead:  # release/resume rows need the GPU's memory saver: skipped on a CPU
            run.section(result, "overhead", lambda: bench_overhead(run, engine, 10))
    finally:
        t0 = time.perf_counter()
        engine.shutdown()
        result["shutdown_s"] = round(time.perf_counter() - t0, 2)
        if not run.cpu:
            torch.cuda.empty_cache()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu", action="store_true", help="dry run on a CPU (SGLang 0.5.2's CPU engine)")
    parser.add_argument("--models", default="small,7b", help="comma-separated: small, 7b, tiny")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds on the small model (>= 5)")
    parser.add_argument("--rounds-7b", type=int, default=5, help="timed rounds on the 7B-shaped model (>= 5)")
    parser.add_argument("--buckets-small", default="16,64,1024", help="bucket sizes (MiB) swept on the small model")
    parser.add_argument("--buckets-7b", default="512,1024,4096,8192,16384", help="bucket sizes (MiB) swept on 7b")
    parser.add_argument("--deadline-s", type=float, default=540.0, help="stop measuring after this long")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[gpu-weights %(asctime)s] %(message)s", stream=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    if min(args.rounds, args.rounds_7b) < 1:
        parser.error("--rounds and --rounds-7b must be at least 1")
    run = Run(args.out, args.cpu, time.monotonic() + args.deadline_s)
    import torch

    import sglang_roll_compat

    run.results.update(
        started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        sglang=str(sglang_roll_compat.SELECTION.installed.version),
        torch=torch.__version__,
        device=None if args.cpu else torch.cuda.get_device_name(0),
        models={},
    )
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if run.left() < 90:
            run.results["models"][model] = "skipped: out of time"
            continue
        sweep = [int(x) for x in (args.buckets_7b if model == "7b" else args.buckets_small).split(",") if x]
        run.section(
            run.results["models"],
            model,
            lambda m=model, s=sweep: bench_model(
                run, m, s, args.rounds_7b if m == "7b" else args.rounds, 5 if m == "7b" else 3, overhead=m != "7b"
            ),
        )
    run.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run.save()
    return 1 if run.results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
