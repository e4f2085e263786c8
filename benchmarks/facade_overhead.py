"""Target 3: what each facade method adds over calling the upstream ``Engine`` directly.

Both sides talk to the same in-process fake tokenizer manager (``tests/fake_launch.py``: the
REAL upstream ``Engine`` class, only its launch faked), which answers at once, so the difference
is the facade's own work. Each pair is timed side by side (``_stats.side_by_side``: timeit
blocks, interleaved, paired per round). Target per call: at most 5 µs added, or 3% of the direct
call, whichever is larger.

When a target is missed, a breakdown of the facade's plumbing (the sync-to-async bridge
``Engine._run``, the engine-death race ``Engine._guarded``, signature inspection) and a cProfile
of the missing call say where the time goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import importlib
import importlib.util
import io
import os
import pstats
import statistics
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import ROOT
from ._stats import INFO, Measurement, Section, Summary, Target, differences, fmt, ratios, side_by_side

ABS_LIMIT_S = 5e-6  # <= 5 µs added per call ...
REL_LIMIT = 0.03  # ... or <= 3% of the direct call, whichever is larger

SAMPLING = {"max_new_tokens": 1, "temperature": 0.0}
GROUP = {
    "master_address": "127.0.0.1",
    "master_port": 29500,
    "rank_offset": 1,
    "world_size": 2,
    "group_name": "weight_update_group",
    "backend": "nccl",
}
DISTRIBUTED = {
    "names": ["model.norm.weight"],
    "dtypes": ["bfloat16"],
    "shapes": [[4]],
    "group_name": "weight_update_group",
    "flush_cache": True,
}


@dataclass(frozen=True)
class Case:
    name: str
    direct: Callable[[], object]
    facade: Callable[[], object]
    calls: int = 1  # upstream calls in one statement (the limit scales with it)
    target: bool = True  # False: reported as info (the two sides do different work)
    note: str = ""


def _load_test_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "tests" / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"tests/{name}.py not found")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses (fake_launch has some) look their module up there
    spec.loader.exec_module(module)
    return module


def _no_meter(pids: object) -> None:
    return None  # no GPU meter: release_memory_occupation does not poll


@contextlib.contextmanager
def fake_engine(workdir: Path) -> Iterator[tuple[Any, Any]]:
    """A facade ``Engine`` over the real upstream class with the launch faked; yields
    ``(engine, fake_tokenizer_manager)`` and restores everything it changed afterwards."""
    import pytest
    import torch.multiprocessing

    from sglang_roll_compat import Engine

    fake_launch = _load_test_module("fake_launch")
    helpers = _load_test_module("helpers")
    environ = dict(os.environ)
    strategy = torch.multiprocessing.get_sharing_strategy()
    # "file_system": serializing the same CPU tensor again reuses its handle; the default
    # "file_descriptor" strategy dups one fd per tensor per call and never closes it
    torch.multiprocessing.set_sharing_strategy("file_system")
    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setenv("SGLANG_ROLL_COMPAT_CACHE_DIR", str(workdir / "cache"))
        fake = fake_launch.install(monkeypatch)
        engine = Engine(worker_name="bench", memory_meter=_no_meter, **helpers.engine_args())
        # upstream's sync methods call asyncio.get_event_loop(): give them the loop the facade
        # runs its calls on (the facade sets it itself on every call, as SGLang <= 0.5.3 needs)
        loop = event_loop(engine)
        if loop is not None:
            asyncio.set_event_loop(loop)
        else:
            engine.flush_cache()
        try:
            yield engine, fake.managers[-1]
        finally:
            engine.shutdown()
            asyncio.set_event_loop(None)
    finally:
        monkeypatch.undo()
        torch.multiprocessing.set_sharing_strategy(strategy)
        os.environ.clear()
        os.environ.update(environ)


def cases(engine: Any, tm: Any) -> list[Case]:
    import torch

    up = engine.upstream
    named = [
        ("model.layers.0.mlp.down_proj.weight", torch.zeros(4, 4, dtype=torch.bfloat16)),
        ("model.norm.weight", torch.ones(4, dtype=torch.float32)),
    ]
    if engine.capabilities()["abort"]["support"] == "native":

        def abort_direct() -> None:
            tm.abort_request(abort_all=True)
    else:

        def abort_direct() -> None:
            for rid in list(tm.rid_to_state):
                tm.abort_request(rid)

    def release_resume_direct() -> None:
        up.release_memory_occupation()
        up.resume_memory_occupation()

    def release_resume_facade() -> None:
        engine.release_memory_occupation()
        engine.resume_memory_occupation()

    out = [
        Case("flush_cache()", up.flush_cache, engine.flush_cache),
        Case(
            "generate(input_ids=[1, 2, 3])",
            lambda: up.generate(input_ids=[1, 2, 3], sampling_params=SAMPLING),
            lambda: engine.generate(input_ids=[1, 2, 3], sampling_params=SAMPLING),
        ),
        Case(
            "generate(input_ids=[1, 2, 3], lora_path=None)",
            lambda: up.generate(input_ids=[1, 2, 3], sampling_params=SAMPLING, lora_path=None),
            lambda: engine.generate(input_ids=[1, 2, 3], sampling_params=SAMPLING, lora_path=None),
            note="an extra keyword: the facade checks it against upstream's signature",
        ),
        Case(
            "init_weights_update_group(...)",
            lambda: up.init_weights_update_group(**GROUP),
            lambda: engine.init_weights_update_group(**GROUP),
        ),
        Case(
            "update_weights_from_tensor(2 small tensors, load_format='direct')",
            lambda: up.update_weights_from_tensor(named, load_format="direct"),
            lambda: engine.update_weights_from_tensor(named, load_format="direct"),
            note="same request on both sides",
        ),
        Case(
            "release_memory_occupation() + resume_memory_occupation()",
            release_resume_direct,
            release_resume_facade,
            calls=2,
            note="one pair per statement; the limit is per call x 2",
        ),
        Case(
            "abort() (all requests)",
            abort_direct,
            engine.abort,
            note="direct: tokenizer_manager.abort_request (upstream Engine has no abort)",
        ),
    ]
    if engine.capabilities()["update_weights_from_distributed"]["support"] == "native":
        out.append(
            Case(
                "update_weights_from_distributed(1 tensor)",
                lambda: up.update_weights_from_distributed(**DISTRIBUTED),
                lambda: engine.update_weights_from_distributed(**DISTRIBUTED),
            )
        )
    out.append(Case("get_server_info()", up.get_server_info, engine.get_server_info))
    loop = event_loop(engine)
    if loop is not None:
        out.append(
            Case(
                "upstream: loop.run_until_complete(async_generate(...)) vs generate(...)",
                lambda: up.generate(input_ids=[1, 2, 3], sampling_params=SAMPLING),
                lambda: loop.run_until_complete(up.async_generate(input_ids=[1, 2, 3], sampling_params=SAMPLING)),
                target=False,
                note="no facade on either side: what upstream's async path (the one the facade's generate "
                "awaits, so that an engine death can interrupt it) costs over upstream's sync one",
            )
        )
    if engine.capabilities()["update_weights_from_tensor"]["support"] == "adapted":
        out.append(
            Case(
                "update_weights_from_tensor(2 small tensors), default format",
                lambda: up.update_weights_from_tensor(named),
                lambda: engine.update_weights_from_tensor(named),
                target=False,
                note="different work: the facade sends flattened buckets (one per dtype here), upstream pickles "
                "each tensor; CPU shared memory here, CUDA IPC on a GPU",
            )
        )
    return out


async def _noop() -> None:
    return None


def _internal(engine: Any, *names: str) -> Any:
    """A private attribute of the facade, or of the module defining it (the first name found):
    the breakdown reads internals, which may move; a missing one only drops its row."""
    owners = [engine]
    for cls in type(engine).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and module.__name__.startswith("sglang_roll_compat"):
            owners.append(module)
    for name in names:
        for owner in owners:
            value = getattr(owner, name, None)
            if value is not None:
                return value
    return None


def event_loop(engine: Any) -> Any:
    return _internal(engine, "_loop")


def launch_context(engine: Any) -> Any:
    return _internal(engine, "_death", "_ctx")


def _plumbing(engine: Any) -> tuple[dict[str, Callable[[], object]], list[str]]:
    """The facade's building blocks, each alone, where this version of the package has them."""
    loop, run, guarded = event_loop(engine), _internal(engine, "_run"), _internal(engine, "_guarded")
    params, memory_tags = _internal(engine, "_params"), _internal(engine, "_memory_tags")
    request_fields, make = _internal(engine, "request_fields"), _internal(engine, "_make")
    child_pids = _internal(engine, "_child_pids")
    ctx = launch_context(engine)
    if child_pids is None and ctx is not None:
        child_pids = getattr(ctx, "child_pids", None)
    io_struct = _internal(engine, "_io")
    method = engine.upstream.async_generate
    check_fields: Callable[[], object] | None = None
    if request_fields is not None and io_struct is not None:
        check_fields = lambda: request_fields("release_memory_occupation", io_struct)  # noqa: E731
    elif make is not None:
        check_fields = lambda: make("ReleaseMemoryOccupationReqInput")  # noqa: E731
    wanted: dict[str, Callable[[], object] | None] = {
        "loop.run_until_complete(noop()) (what upstream pays)": loop and (lambda: loop.run_until_complete(_noop())),
        "facade _run(noop()) (sync-to-async bridge)": run and (lambda: run(_noop())),
        "facade _run(_guarded(noop())) (+ engine-death race)": run and guarded and (lambda: run(guarded(_noop()))),
        "_params(upstream.async_generate) (inspect.signature, per generate)": params and (lambda: params(method)),
        "_memory_tags() (per release/resume)": memory_tags,
        "checking a request's fields (per request)": check_fields,
        "ReleaseMemoryOccupationReqInput() (what upstream pays)": getattr(
            io_struct, "ReleaseMemoryOccupationReqInput", None
        ),
        "child pids of the launch (per release)": child_pids,
    }
    parts: dict[str, Callable[[], object]] = {}
    missing: list[str] = []
    for name, func in wanted.items():
        if func is None:
            missing.append(name)
            continue
        try:
            func()
        except Exception as exc:  # an internal that changed shape: leave its row out, say so
            missing.append(f"{name} ({type(exc).__name__})")
            continue
        parts[name] = func
    return parts, missing


def _cprofile(func: Callable[[], object], calls: int = 2000, top: int = 8) -> list[dict[str, Any]]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        func()
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (filename, line, name), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{name} ({Path(filename).name}:{line})",
                "calls_per_call": ncalls / calls,
                "tottime_us_per_call": tottime / calls * 1e6,
                "cumtime_us_per_call": cumtime / calls * 1e6,
            }
        )
    rows.sort(key=lambda r: -r["tottime_us_per_call"])
    return rows[:top]


def run(engine: Any, tm: Any, *, repeat: int, budget_s: float, seed: int = 0) -> Section:
    section = Section("facade", "3. Facade overhead per call (same fake tokenizer manager on both sides)")
    ctx_state = "present" if launch_context(engine) is not None else "absent"
    failed: list[Case] = []
    for case in cases(engine, tm):
        samples = side_by_side(
            {"direct": case.direct, "facade": case.facade},
            repeat=repeat,
            budget_s=budget_s,
            between=tm.calls.clear,
            seed=seed,
        )
        direct, facade = samples["direct"], samples["facade"]
        added = differences(direct, facade)
        section.measurements += [
            Measurement(f"{case.name}: upstream direct", Summary.of(direct), "us"),
            Measurement(f"{case.name}: facade", Summary.of(facade), "us", case.note),
            Measurement(f"{case.name}: facade / direct", Summary.of(ratios(direct, facade)), "x", "per round"),
        ]
        added_s = Summary.of(added)
        direct_m = statistics.median(direct)
        limit = max(ABS_LIMIT_S * case.calls, REL_LIMIT * direct_m)
        ratio_m = statistics.median(ratios(direct, facade))
        rule = (
            f"added <= max({fmt(ABS_LIMIT_S * case.calls, 'us')}, 3% of direct {fmt(direct_m, 'us')}); "
            f"facade/direct {ratio_m:.2f}x"
        )
        if case.target:
            target = Target.at_most(f"facade: {case.name}", added_s.median, limit, "us", rule, added_s)
            if target.verdict == "FAIL":
                failed.append(case)
        else:
            rule = f"{case.note}; facade/direct {ratio_m:.2f}x"
            target = Target(f"facade: {case.name}", added_s.median, None, "us", rule, INFO, added_s)
        section.targets.append(target)
    section.notes.append(
        f"Launch context of the fake engine: {ctx_state}. Sync calls from the main thread, the facade "
        f"owns its event loop; {repeat} interleaved blocks of about {budget_s * 1e3:.0f} ms per side."
    )
    parts, missing = _plumbing(engine)
    plumbing = side_by_side(parts, repeat=repeat, budget_s=budget_s, seed=seed)
    for name, values in plumbing.items():
        section.measurements.append(Measurement(f"breakdown: {name}", Summary.of(values), "us"))
    section.extra["breakdown_us"] = {name: statistics.median(v) * 1e6 for name, v in plumbing.items()}
    if missing:
        section.notes.append(f"Breakdown rows left out (internals not found in this version): {', '.join(missing)}.")
    for case in failed:
        tm.calls.clear()
        rows = _cprofile(case.facade)
        section.extra.setdefault("cprofile", {})[case.name] = rows
        lines = [f"cProfile of the facade's {case.name} (per call, top by own time; cProfile inflates):"]
        lines += [
            f"  {r['tottime_us_per_call']:6.2f} µs own, {r['cumtime_us_per_call']:7.2f} µs cum, "
            f"{r['calls_per_call']:.0f}x  {r['function']}"
            for r in rows
        ]
        section.notes.append("\n".join(lines))
    return section
