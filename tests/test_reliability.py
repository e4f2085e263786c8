"""Concurrency, lifecycle and process-global footprint.

* 32 threads importing, patching, unpatching and reading the status at once leave every patch
  target either all patched (exactly one layer, over the original object) or all original, checked
  object by object against the originals snapshotted when the engine module finished importing
  (fresh interpreter; a synthetic engine module everywhere, SGLang's real one in sglang sessions);
* 1,000 patch/unpatch cycles leave no growth (gc objects, tracemalloc, wrapt post-import hooks,
  shared records); the figures are printed at the end of the run;
* ``import sglang_roll_compat`` works inside a thread and inside a running event loop;
* the engine module's ``signal`` proxy skips off the main thread and calls through on it;
* a scheduler child SIGKILLed while the launch waits on its ready-pipe fails the launch with
  ``EngineLaunchError`` within 5 s, and nothing is left running;
* the shim touches only the env names it documents, and a whole facade lifecycle writes only
  under the cache directory.

Drivers that need a fresh interpreter are plain functions of this module, shipped to a child
``python -c`` with ``inspect.getsource`` (they import everything they use themselves).
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _figures
import pytest
from helpers import engine_args, make_fake_sglang, package_parent

from sglang_roll_compat import envpolicy, launch, workspace

HERE = Path(__file__).parent
ENGINE = "sglang.srt.entrypoints.engine"
SUBPROCESS_TIMEOUT = 300

# A stand-in for SGLang's engine module with every attribute the 0.5.2 family patches. Its import
# takes a while (like the real one) so that threads meet it half-initialised.
SYNTHETIC_ENGINE = textwrap.dedent(
    '''
    """Synthetic sglang.srt.entrypoints.engine (tests only)."""
    import multiprocessing as mp
    import signal
    import time

    from sglang.srt.managers.tokenizer_manager import TokenizerManager  # as the real one does
    from sglang.srt.torch_memory_saver_adapter import TorchMemorySaverAdapter  # through its scheduler


    class Engine:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        def shutdown(self):
            return "down"


    time.sleep(0.2)  # a slow import: other threads see the module in sys.modules, unfinished


    def _launch_subprocesses(server_args, port_args=None):
        return ("launched", server_args)


    def _set_envs_and_config(server_args):
        return None
    '''
)


SYNTHETIC_TOKENIZER_MANAGER = textwrap.dedent(
    '''
    """Synthetic sglang.srt.managers.tokenizer_manager (tests only)."""


    class TokenizerManager:
        def auto_create_handle_loop(self):
            return None
    '''
)


SYNTHETIC_MEMORY_SAVER_ADAPTER = textwrap.dedent(
    '''
    """Synthetic sglang.srt.torch_memory_saver_adapter (tests only)."""
    import contextlib


    class TorchMemorySaverAdapter:
        def configure_subprocess(self):
            raise NotImplementedError


    class _TorchMemorySaverAdapterReal(TorchMemorySaverAdapter):
        def configure_subprocess(self):
            return contextlib.nullcontext()
    '''
)


def make_synthetic_sglang(root: Path, version: str = "0.5.2") -> Path:
    """A fake SGLang install (metadata + version) whose engine module is :data:`SYNTHETIC_ENGINE`."""
    make_fake_sglang(root, version)
    for package in ("srt", "srt/entrypoints"):
        (root / "sglang" / package).mkdir(parents=True, exist_ok=True)
        (root / "sglang" / package / "__init__.py").write_text("")
    (root / "sglang" / "srt" / "entrypoints" / "engine.py").write_text(SYNTHETIC_ENGINE)
    (root / "sglang" / "srt" / "managers").mkdir(parents=True, exist_ok=True)
    (root / "sglang" / "srt" / "managers" / "__init__.py").write_text("")
    (root / "sglang" / "srt" / "managers" / "tokenizer_manager.py").write_text(SYNTHETIC_TOKENIZER_MANAGER)
    (root / "sglang" / "srt" / "torch_memory_saver_adapter.py").write_text(SYNTHETIC_MEMORY_SAVER_ADAPTER)
    return root


# -- running drivers in fresh interpreters ---------------------------------------------------------
def _child_env(prepend: list[Path], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SGLANG_ROLL_COMPAT_FORCE_FAMILY", None)
    env.update(extra or {})
    paths = [str(p) for p in prepend] + [str(HERE), str(package_parent())]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def start_driver(
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    *,
    prepend: list[Path] = (),  # type: ignore[assignment]
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[str]:
    """Run ``func(**kwargs)`` in a fresh interpreter; :func:`finish` collects its JSON result."""
    code = (
        "from __future__ import annotations\n"
        + textwrap.dedent(inspect.getsource(func))
        + f"\nimport json as _json\nprint('RESULT ' + _json.dumps({func.__name__}(**{kwargs!r})))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-P", "-c", code],  # -P: not the working directory first
        env=_child_env(list(prepend), env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(cwd) if cwd else None,
    )


def finish(proc: subprocess.Popen[str], timeout: float = SUBPROCESS_TIMEOUT) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"driver hung for {timeout}s:\n{err[-4000:]}") from None
    results = [line[len("RESULT ") :] for line in out.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, f"driver failed (rc={proc.returncode}):\n{out[-2000:]}\n{err[-6000:]}"
    result: dict[str, Any] = json.loads(results[-1])
    return result


def run_driver(func: Callable[..., Any], kwargs: dict[str, Any], **options: Any) -> dict[str, Any]:
    return finish(start_driver(func, kwargs, **options))


@pytest.fixture
def synthetic(tmp_path: Path) -> Path:
    return make_synthetic_sglang(tmp_path / "synthetic-sglang")


# -- driver: 32 threads racing ----------------------------------------------------------------------
def race_driver(threads: int, ops: int, seed: int, preimport: bool) -> dict[str, Any]:
    import importlib
    import random
    import sys
    import threading
    import traceback

    import _targets

    engine_name = "sglang.srt.entrypoints.engine"
    snapshots = _targets.watch_originals()  # registered first, so it fires before any patch lands
    if preimport:  # the race is then on the engine import, against patch/unpatch/status
        importlib.import_module("sglang_roll_compat")
    sys.setswitchinterval(1e-5)  # many more thread switches than usual: shake out interleavings

    def pkg() -> Any:
        return importlib.import_module("sglang_roll_compat")

    seen_states: dict[str, int] = {}

    def status() -> None:
        for s in pkg().status():
            seen_states[s.state] = seen_states.get(s.state, 0) + 1

    operations = {
        "import_engine": lambda: importlib.import_module(engine_name),
        "import_pkg": pkg,
        "patch": lambda: pkg().patch(),
        "unpatch": lambda: pkg().unpatch(),
        "status": status,
    }
    weights = ["import_engine", "import_pkg", "patch", "patch", "unpatch", "unpatch", "status"]
    errors: list[str] = []
    done: dict[str, int] = {}
    barrier = threading.Barrier(threads)

    def worker(i: int) -> None:
        rnd = random.Random(seed * 1000 + i)
        try:
            barrier.wait()
            for _ in range(ops):
                op = rnd.choice(weights)
                operations[op]()
                done[op] = done.get(op, 0) + 1
        except BaseException:
            errors.append(traceback.format_exc())

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=240)
    hung = sum(t.is_alive() for t in workers)
    sys.setswitchinterval(0.005)

    package = pkg()
    importlib.import_module(engine_name)
    from sglang_roll_compat import _shared

    def check() -> dict[str, str]:
        rows = {}
        shared = _shared.state()
        for p, current, original in _targets.targets(package.FAMILY.patches, snapshots):
            record = shared.records.get(p.target)
            mark = _shared.marker_of(current)
            if current is original and record is None and mark is None:
                rows[p.target] = "original"
            elif (
                mark is not None
                and getattr(current, "__wrapped__", None) is original  # one layer, right over the original
                and _shared.marker_of(original) is None
                and record is not None
                and record["original"] is original
                and record["replacement"] is current
            ):
                rows[p.target] = "patched"
            else:
                rows[p.target] = f"INCONSISTENT current={current!r} mark={mark} record={record is not None}"
        return rows

    after_race = check()
    armed = package._PATCHER.armed
    statuses = {s.name: s.state for s in package.status()}
    package.patch()
    after_patch = check()
    package.unpatch()
    after_unpatch = check()
    package.patch()
    return {
        "errors": errors[:3],
        "error_count": len(errors),
        "hung": hung,
        "ops": done,
        "seen_states": seen_states,
        "after_race": after_race,
        "armed": armed,
        "statuses": statuses,
        "after_patch": after_patch,
        "after_unpatch": after_unpatch,
        "family": package.FAMILY.name,
    }


def _assert_race_result(result: dict[str, Any], min_targets: int) -> None:
    assert result["error_count"] == 0, result["errors"]
    assert result["hung"] == 0
    assert sum(result["ops"].values()) > 0
    after = result["after_race"]
    assert len(after) >= min_targets, after
    states = set(after.values())
    assert states in ({"patched"}, {"original"}), after  # all or nothing, object by object
    reported = {s for s in result["statuses"].values() if s != "not needed"}
    if states == {"patched"}:  # status() says the same (a target module not imported yet may be pending)
        assert result["armed"] and "applied" in reported and reported <= {"applied", "pending import"}, result
    else:
        assert not result["armed"] and reported == {"off"}, result["statuses"]
    assert set(result["after_patch"].values()) == {"patched"}, result["after_patch"]
    assert set(result["after_unpatch"].values()) == {"original"}, result["after_unpatch"]
    assert "overwritten" not in result["seen_states"]


def _note_race(suite: str, result: dict[str, Any]) -> None:
    final = "/".join(sorted(set(result["after_race"].values())))
    targets, ops = len(result["after_race"]), sum(result["ops"].values())
    _figures.note(suite, ops=ops, errors=result["error_count"], targets=targets, final=f"all {final}")


@pytest.mark.parametrize("preimport", [False, True], ids=["all-racing", "package-imported-first"])
def test_32_threads_importing_patching_unpatching_leave_a_consistent_process(synthetic: Path, preimport: bool) -> None:
    result = run_driver(race_driver, {"threads": 32, "ops": 30, "seed": 1, "preimport": preimport}, prepend=[synthetic])
    _assert_race_result(result, min_targets=6)
    which = "package imported first" if preimport else "all racing"
    _note_race(f"concurrency (32 threads, synthetic engine, {which})", result)


# -- driver: 1,000 patch/unpatch cycles ----------------------------------------------------------------
def cycles_driver(cycles: int, import_engine: bool) -> dict[str, Any]:
    import gc
    import importlib
    import time
    import tracemalloc

    import wrapt.importer

    import sglang_roll_compat as package
    from sglang_roll_compat import _shared

    engine_name = "sglang.srt.entrypoints.engine"
    if import_engine:
        importlib.import_module(engine_name)

    def sizes() -> dict[str, int]:
        shared = _shared.state()
        with shared.lock:
            return {
                "hooks": sum(len(v) for v in wrapt.importer._post_import_hooks.values()),
                "records": len(shared.records),
                "armed": len(shared.armed),
                "reached": len(shared.reached),
                "child_hooks": len(shared.child_hooks),
                "hooked_modules": len(package._PATCHER._hooked_modules),
            }

    for _ in range(20):  # warm-up: caches, interned strings, logger lookups
        package.unpatch()
        package.patch()
    gc.collect()
    tracemalloc.start()
    objects_before = len(gc.get_objects())
    memory_before = tracemalloc.get_traced_memory()[0]
    before = sizes()
    started = time.perf_counter()
    for _ in range(cycles):
        package.unpatch()
        package.patch()
    seconds = time.perf_counter() - started
    gc.collect()
    objects_after = len(gc.get_objects())
    memory_after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    after = sizes()
    states = {s.name: s.state for s in package.status()}
    layers = {}
    for key, record in _shared.state().records.items():  # exactly one layer on each applied target
        current = vars(record["parent"])[record["attr"]]
        layers[key] = current is record["replacement"] and current.__wrapped__ is record["original"]
    return {
        "cycles": cycles,
        "seconds": seconds,
        "objects": objects_after - objects_before,
        "memory_bytes": memory_after - memory_before,
        "before": before,
        "after": after,
        "states": states,
        "layers": layers,
    }


def _assert_no_growth(result: dict[str, Any], suite: str, engine_imported: bool) -> None:
    growth = {
        "objects": result["objects"],
        "memory bytes": result["memory_bytes"],
        **{k: result["after"][k] - result["before"][k] for k in result["before"]},
    }
    _figures.note(suite, cycles=result["cycles"], seconds=round(result["seconds"], 2), growth=growth)
    assert all(growth[k] == 0 for k in result["before"]), growth  # hooks, records, armed, reached...
    assert result["objects"] < 100, growth  # no per-cycle leak: 1,000 cycles would leave thousands
    assert result["memory_bytes"] < 64 * 1024, growth
    if engine_imported:
        assert result["layers"] and all(result["layers"].values()), result["layers"]
        assert {s for s in result["states"].values() if s != "not needed"} == {"applied"}, result["states"]
    else:
        assert {s for s in result["states"].values() if s != "not needed"} == {"pending import"}, result["states"]


@pytest.mark.parametrize("import_engine", [True, False], ids=["engine-imported", "engine-pending"])
def test_a_thousand_patch_cycles_leave_no_growth(synthetic: Path, import_engine: bool) -> None:
    result = run_driver(cycles_driver, {"cycles": 1000, "import_engine": import_engine}, prepend=[synthetic])
    suite = f"patch cycles (synthetic engine, {'imported' if import_engine else 'pending import'})"
    _assert_no_growth(result, suite, import_engine)


# -- driver: importing in a thread / in a running event loop ------------------------------------------
def import_driver(where: str, import_engine: bool) -> dict[str, Any]:
    import asyncio
    import importlib
    import threading

    out: dict[str, Any] = {"where": where}

    def do_import() -> None:
        try:
            package = importlib.import_module("sglang_roll_compat")
            if import_engine:
                importlib.import_module("sglang.srt.entrypoints.engine")
            out["family"] = package.FAMILY.name
            out["states"] = sorted({s.state for s in package.status()} - {"not needed"})
            out["thread_is_main"] = threading.current_thread() is threading.main_thread()
            try:
                out["loop_running"] = asyncio.get_running_loop().is_running()
            except RuntimeError:
                out["loop_running"] = False
        except BaseException as exc:
            out["error"] = repr(exc)

    async def in_loop() -> None:
        do_import()

    if where == "thread":
        t = threading.Thread(target=do_import)
        t.start()
        t.join()
    elif where == "loop":
        asyncio.run(in_loop())
    else:  # a running loop inside a worker thread (a Ray async actor)
        t = threading.Thread(target=lambda: asyncio.run(in_loop()))
        t.start()
        t.join()
    return out


@pytest.mark.parametrize("where", ["thread", "loop", "loop-in-thread"])
def test_import_inside_a_thread_or_a_running_event_loop(synthetic: Path, where: str) -> None:
    result = run_driver(import_driver, {"where": where, "import_engine": True}, prepend=[synthetic])
    assert "error" not in result, result
    assert result["family"] == "v052"
    assert result["states"] == ["applied"]
    assert result["thread_is_main"] is (where == "loop")
    assert result["loop_running"] is (where != "thread")


@pytest.mark.parametrize("where", ["thread", "loop-in-thread"])
def test_import_off_the_main_thread_with_the_installed_sglang(where: str) -> None:
    # whatever SGLang this session has (the unit session's metadata-only fake, or the real one);
    # the engine module is not imported: the patches wait for it
    result = run_driver(import_driver, {"where": where, "import_engine": False})
    assert "error" not in result, result
    assert result["states"] == ["pending import"]


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.sglang
def test_a_thousand_patch_cycles_on_the_real_engine_module_leave_no_growth() -> None:
    importlib.import_module(ENGINE)
    # in this process: the real engine module is imported by now (as in any sglang session)
    result = cycles_driver(1000, import_engine=True)
    _assert_no_growth(result, "patch cycles (real engine)", True)


# -- signals -----------------------------------------------------------------------------------------
@pytest.mark.sglang
def test_the_engine_modules_signal_proxy_skips_off_the_main_thread() -> None:
    import sglang_roll_compat
    from sglang_roll_compat import _shared

    engine_mod = importlib.import_module(ENGINE)
    if sglang_roll_compat.FAMILY.signals_guarded:
        assert vars(engine_mod)["signal"] is signal
        pytest.skip("this SGLang skips signal.signal off the main thread itself: no proxy installed")
    proxy = vars(engine_mod)["signal"]
    assert proxy is not signal and _shared.marker_of(proxy) == {
        "owner": "sglang_roll_compat",
        "patch": "signal_off_main_thread",
    }

    def handler(signum: int, frame: Any) -> None:
        pass

    original = signal.getsignal(signal.SIGUSR1)
    reached = _shared.state().reached.get("signal_off_main_thread", 0)
    seen: dict[str, Any] = {}

    def off_main() -> None:
        try:
            seen["returned"] = proxy.signal(signal.SIGUSR1, handler)
        except BaseException as exc:
            seen["error"] = exc
        try:
            signal.signal(signal.SIGUSR1, handler)  # control: the real call raises here
        except ValueError as exc:
            seen["control"] = exc

    worker = threading.Thread(target=off_main)
    worker.start()
    worker.join()
    assert "error" not in seen, seen
    assert isinstance(seen.get("control"), ValueError)
    assert seen["returned"] is original  # the current handler, as signal.signal would return
    assert signal.getsignal(signal.SIGUSR1) is original  # nothing was installed
    assert _shared.state().reached["signal_off_main_thread"] == reached + 1
    try:  # on the main thread the call goes through
        assert proxy.signal(signal.SIGUSR1, handler) is original
        assert signal.getsignal(signal.SIGUSR1) is handler
    finally:
        signal.signal(signal.SIGUSR1, original)
    assert proxy.getsignal(signal.SIGUSR1) is original  # everything else passes through
    assert proxy.SIGQUIT is signal.SIGQUIT


# -- a scheduler child killed during the launch ---------------------------------------------------


@contextmanager
def launch_replaced_by(engine_mod: Any, fake: Callable[..., Any]) -> Iterator[None]:
    """Put ``fake`` where SGLang's launch function is, UNDER the shim's launch wrapper."""
    import sglang_roll_compat

    classmethod_launch = "_launch_subprocesses" not in vars(engine_mod)
    owner = engine_mod.Engine if classmethod_launch else engine_mod
    sglang_roll_compat.unpatch()
    saved = vars(owner)["_launch_subprocesses"]

    def as_classmethod(cls: Any, *args: Any, **kwargs: Any) -> Any:
        return fake(*args, **kwargs)

    owner._launch_subprocesses = classmethod(as_classmethod) if classmethod_launch else fake
    sglang_roll_compat.patch()
    try:
        yield
    finally:
        sglang_roll_compat.unpatch()
        owner._launch_subprocesses = saved
        sglang_roll_compat.patch()


def _our_children() -> set[int]:
    import psutil

    return {c.pid for c in psutil.Process().children(recursive=True)}


@pytest.mark.sglang
def test_a_scheduler_child_killed_during_launch_fails_the_launch_within_5s(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sglang_roll_compat import Engine, EngineLaunchError

    monkeypatch.setenv(workspace.CACHE_DIR_ENV, str(tmp_path / "cache"))
    engine_mod = importlib.import_module(ENGINE)
    started: dict[str, Any] = {}
    waiting = threading.Event()

    def launch_waiting_on_the_ready_pipe(*args: Any, **kwargs: Any) -> Any:
        # what SGLang <= 0.5.6 does: start the scheduler, then block in recv() on its ready-pipe
        proc = engine_mod.mp.Process(target=time.sleep, args=(120,), daemon=True, name="fake-scheduler")
        proc.start()
        reader, writer = engine_mod.mp.Pipe(duplex=False)
        ctx = launch.current()  # the shim recorded both, through the engine module's mp proxy
        started["tracked"] = ctx is not None and proc in ctx.processes and (reader, writer) in ctx.pipes
        started["proc"] = proc
        waiting.set()
        data = reader.recv()
        if data["status"] != "ready":
            raise RuntimeError("Initialization failed. Please see the error messages above.")
        raise AssertionError(f"the fake scheduler never says ready, got {data!r}")

    def kill_when_waiting() -> None:
        if waiting.wait(60):
            time.sleep(0.3)
            started["killed_at"] = time.monotonic()
            os.kill(started["proc"].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_waiting)
    with launch_replaced_by(engine_mod, launch_waiting_on_the_ready_pipe):
        killer.start()
        try:
            with pytest.raises(EngineLaunchError) as info:
                Engine(worker_name="killed", **engine_args())
            raised_at = time.monotonic()
        finally:
            waiting.set()
            killer.join()
    proc = started["proc"]
    assert started["tracked"]
    assert raised_at - started["killed_at"] < 5.0
    message = str(info.value)
    assert f"pid {proc.pid}" in message and "exited with code -9" in message and "during launch" in message
    assert proc.exitcode == -9
    assert proc.pid not in _our_children(), "no child is left behind"
    _figures.note("launch-phase SIGKILL", detected_in_s=round(raised_at - started["killed_at"], 2))


# -- a whole lifecycle writes only under the cache dir ---------------------------------------------------------
def _walk(root: Path) -> set[Path]:
    return set(root.rglob("*"))


@pytest.mark.sglang
def test_a_facade_lifecycle_writes_only_under_the_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fake_launch

    from sglang_roll_compat import Engine

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    xdg = home / "xdg-cache"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.delenv(workspace.CACHE_DIR_ENV, raising=False)
    monkeypatch.chdir(cwd)
    engine_mod = importlib.import_module(ENGINE)

    class LaunchWithEnvs(fake_launch.FakeLaunch):
        def __call__(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
            server_args = kwargs.get("server_args", args[0] if args else None)
            self.engine_mod._set_envs_and_config(server_args)  # the patched one, as upstream's launch does
            return super().__call__(*args, **kwargs)

    fake = LaunchWithEnvs(engine_mod)
    fake.start_children = 1
    saved_env = dict(os.environ)
    home_before, cwd_before = _walk(home), _walk(cwd)
    try:
        with launch_replaced_by(engine_mod, fake):
            engine = Engine(worker_name="lifecycle", **engine_args())
            try:
                assert engine.generate(input_ids=[1, 2], sampling_params={"max_new_tokens": 1})["output_ids"]
                engine.flush_cache()
            finally:
                engine.shutdown()
    finally:  # upstream's _set_envs_and_config changed this process's environment
        os.environ.clear()
        os.environ.update(saved_env)
    (child,) = fake.children
    assert child.exitcode is not None
    cache = xdg / "sglang_roll_compat"
    created = _walk(home) - home_before
    assert (cache / "workers" / workspace.host_component() / "w-lifecycle" / "triton") in created
    outside = sorted(str(p) for p in created if p not in cache.parents and not p.is_relative_to(cache))
    assert outside == [], f"written outside {cache}: {outside}"
    assert not list((cache / "run").iterdir()), "the launch's state directory is removed at shutdown"
    assert _walk(cwd) == cwd_before, "the working directory gains nothing"


# -- real SGLang: the same races, the env footprint ---------------------------------------------------------
def env_driver(mode: str) -> dict[str, Any]:
    import os
    import sys

    recording: list[tuple[str, str]] = []
    active = [False]
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    path_events = {
        "os.mkdir": 2,
        "os.chmod": 2,
        "os.remove": 1,
        "os.rmdir": 1,
        "os.rename": 2,
        "os.symlink": 2,  # the link itself is args[1]
        "os.chown": 3,
        "os.utime": 3,
        "shutil.rmtree": 1,
        "os.truncate": None,
    }

    def absolute(path: Any, dir_fd: Any) -> str:
        if isinstance(path, int):
            return os.readlink(f"/proc/self/fd/{path}")
        text = os.fsdecode(path)
        if os.path.isabs(text):
            return text
        base = os.readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) and dir_fd >= 0 else os.getcwd()
        return os.path.join(base, text)

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if not active[0]:
            return
        active[0] = False
        try:
            if event == "open" and not isinstance(args[0], int):
                path, mode_, flags = args
                writes = (isinstance(mode_, str) and any(c in mode_ for c in "wax+")) or (
                    isinstance(flags, int) and bool(flags & write_flags)
                )
                recording.append(("write" if writes else "read", absolute(path, None)))
            elif event in path_events:
                index = path_events[event]
                dir_fd = args[index] if index is not None and len(args) > index else None
                recording.append(("write", absolute(args[1] if event == "os.symlink" else args[0], dir_fd)))
                if event == "os.rename":
                    recording.append(("write", absolute(args[1], args[3])))
        except Exception as exc:  # never break the code under test
            recording.append(("audit-error", f"{event}: {exc!r}"))
        finally:
            active[0] = True

    env0 = dict(os.environ)
    import sglang_roll_compat

    env1 = dict(os.environ)
    from env_scenarios import server_args
    from sglang.srt.entrypoints import engine

    if mode == "unpatched":
        sglang_roll_compat.unpatch()
    args = server_args()
    before = dict(os.environ)
    sys.addaudithook(audit)
    active[0] = True
    try:
        engine._set_envs_and_config(args)
        outcome = "ok"
    except BaseException as exc:
        outcome = repr(exc)
    active[0] = False
    after = dict(os.environ)
    return {
        "mode": mode,
        "outcome": outcome,
        "import_changed": sorted(k for k in set(env0) | set(env1) if env0.get(k) != env1.get(k)),
        "changed": sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)),
        "writes": sorted({p for kind, p in recording if kind == "write"}),
        "reads": sorted({p for kind, p in recording if kind == "read"}),
        "audit_errors": [p for kind, p in recording if kind == "audit-error"],
        "states": {s.name: s.state for s in sglang_roll_compat.status()},
    }


SECRETS = (
    "/.ssh/",
    "/.netrc",
    "/.aws/",
    "/.git-credentials",
    "/.pypirc",
    "/.docker/",
    "/.kube/",
    "huggingface/token",
    "/etc/shadow",
)


def zygote_driver(jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Import every module SGLang's engine module imports (seconds, once), then fork one child per
    job: in each child neither the engine module nor sglang_roll_compat has been imported yet, as
    in a fresh interpreter, but the engine import takes milliseconds instead of seconds."""
    import ast
    import importlib
    import importlib.util
    import json
    import os
    import shutil
    import sys
    import tempfile
    import traceback

    origin = importlib.util.find_spec("sglang.srt.entrypoints.engine").origin
    with open(origin, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # an optional import of upstream's: the engine import will say
                pass
    preloaded = sorted(m for m in ("sglang.srt.entrypoints.engine", "sglang_roll_compat") if m in sys.modules)
    out_dir = tempfile.mkdtemp(prefix="zygote-")
    children = {}
    for name, job in jobs.items():
        out = os.path.join(out_dir, f"{name}.json")
        pid = os.fork()
        if pid == 0:  # the child: run the job, leave its result in a file, never return
            code = 1
            try:
                os.environ.update(job["env"])
                if job.get("cwd"):
                    os.chdir(job["cwd"])
                sys.path[:0] = job["prepend"]
                importlib.invalidate_caches()
                namespace: dict[str, Any] = {"__name__": f"job_{name}"}
                exec(compile("from __future__ import annotations\n" + job["source"], f"<{name}>", "exec"), namespace)
                result = namespace[job["func"]](**job["kwargs"])
                code = 0
            except BaseException:
                result = {"driver_error": traceback.format_exc()}
            try:
                with open(out, "w", encoding="utf-8") as fh:
                    json.dump(result, fh)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[name] = (pid, out)
    results: dict[str, Any] = {"_preloaded_target_modules": preloaded}
    for name, (pid, out) in children.items():
        _, status = os.waitpid(pid, 0)
        try:
            with open(out, encoding="utf-8") as fh:
                results[name] = json.load(fh)
        except (OSError, ValueError):
            results[name] = {"driver_error": f"the job's process ended with wait status {status} and no result"}
    shutil.rmtree(out_dir, ignore_errors=True)
    return results


_REAL: dict[str, Any] = {}


def real_probes(factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Start (once per session, shared by the test modules) every driver that needs the real
    SGLang engine module, in one :func:`zygote_driver` process; returns the shared handle."""
    if "proc" in _REAL:
        return _REAL
    from test_vendoring import REAL_STEPS, VENDORED, make_vendored_copy, vendoring_driver

    root = factory.mktemp("real-probes")
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("not a key")
    (home / ".netrc").write_text("machine example.com password not-a-secret")
    env_probe = {
        "HOME": str(home),
        workspace.CACHE_DIR_ENV: str(root / "cache"),
        "XDG_CACHE_HOME": str(home / ".cache"),
    }
    vendor_root = make_vendored_copy(root / "fw")

    def job(func: Callable[..., Any], kwargs: dict[str, Any], **extra: Any) -> dict[str, Any]:
        spec = {"source": textwrap.dedent(inspect.getsource(func)), "func": func.__name__, "kwargs": kwargs}
        return {"env": {}, "prepend": [], "cwd": "", **spec, **extra}

    jobs = {
        "race": job(race_driver, {"threads": 32, "ops": 12, "seed": 7, "preimport": False}),
        "patched": job(env_driver, {"mode": "patched"}, env=env_probe, cwd=str(root)),
        "unpatched": job(env_driver, {"mode": "unpatched"}, env=env_probe, cwd=str(root)),
        "vendoring": job(
            vendoring_driver,
            {"steps": REAL_STEPS, "vendored_name": VENDORED},
            prepend=[str(vendor_root)],
            env={workspace.CACHE_DIR_ENV: str(root / "vendor-cache")},
        ),
    }
    _REAL.update(root=root, proc=start_driver(zygote_driver, {"jobs": jobs}), started=time.monotonic())
    atexit.register(_stop_real_probes)
    return _REAL


def _stop_real_probes() -> None:
    proc = _REAL.get("proc")
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()


def real_result(factory: pytest.TempPathFactory, name: str) -> dict[str, Any]:
    probes = real_probes(factory)
    if "results" not in probes:
        probes["results"] = finish(probes["proc"])
        probes["seconds"] = time.monotonic() - probes["started"]
        _figures.note("real-SGLang probes (one preloading process, forked jobs)", seconds=round(probes["seconds"], 1))
    assert probes["results"]["_preloaded_target_modules"] == [], "the preload imported the engine or the package"
    result: dict[str, Any] = probes["results"][name]
    assert "driver_error" not in result, result["driver_error"]
    return result


@pytest.fixture(autouse=True)
def _start_real_probes_early(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The first real-SGLang test of this module starts the probes, which then run beside the
    in-process tests (the probe tests come last in this module). Not earlier in the session: the
    probe process's imports would compete for the CPU with the timed real launches of test_launch."""
    if request.node.get_closest_marker("sglang") is not None:
        real_probes(tmp_path_factory)


@pytest.fixture
def real(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Any]]:
    return lambda name: real_result(tmp_path_factory, name)


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
@pytest.mark.sglang
def test_32_threads_racing_on_the_real_engine_module(real: Callable[[str], dict[str, Any]]) -> None:
    result = real("race")
    _assert_race_result(result, min_targets=5)
    _note_race("concurrency (32 threads, real engine)", result)


@pytest.mark.sglang
def test_the_shim_changes_only_the_env_names_it_documents(real: Callable[[str], dict[str, Any]]) -> None:
    patched = real("patched")
    unpatched = real("unpatched")
    for result in (patched, unpatched):
        assert result["outcome"] == "ok", result
        assert result["audit_errors"] == []
    assert patched["import_changed"] == [], "import sglang_roll_compat changes no env var"
    assert patched["states"]["set_envs_and_config"] == "applied"
    assert unpatched["states"]["set_envs_and_config"] == "off"
    upstream = set(unpatched["changed"])
    assert upstream, "upstream's _set_envs_and_config sets variables (else this test proves nothing)"
    extra = set(patched["changed"]) - upstream
    assert extra <= set(envpolicy.MANAGED_NAMES), (
        f"the shim changed undocumented env names: {extra - set(envpolicy.MANAGED_NAMES)}"
    )
    assert set(patched["changed"]) & set(envpolicy.MANAGED_NAMES), "the shim's own policy ran"


@pytest.mark.sglang
def test_the_shim_writes_only_under_its_cache_dir_and_reads_no_secrets(real: Callable[[str], dict[str, Any]]) -> None:
    patched = real("patched")
    unpatched = real("unpatched")
    cache = os.path.realpath(_REAL["root"] / "cache")
    ours = sorted(set(patched["writes"]) - set(unpatched["writes"]))
    assert ours, "the policy creates the per-worker directories (else the audit saw nothing)"
    outside = [p for p in ours if os.path.realpath(p) != cache and not os.path.realpath(p).startswith(cache + os.sep)]
    assert outside == [], f"writes outside the cache dir: {outside}"
    secret_reads = [p for p in set(patched["reads"]) - set(unpatched["reads"]) if any(s in p for s in SECRETS)]
    assert secret_reads == []
