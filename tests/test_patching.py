"""The patch engine on synthetic modules: hooks, idempotence, threads, identity, markers."""

from __future__ import annotations

import importlib
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sglang_roll_compat import _shared
from sglang_roll_compat.errors import PatchTargetError
from sglang_roll_compat.patching import Patch, Patcher

MODULE_SOURCE = textwrap.dedent(
    """
    import multiprocessing as mp

    def set_envs(server_args):
        return ("original", server_args)

    class Engine:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

        @classmethod
        def launch(cls, x):
            return (cls.__name__, x)

        def shutdown(self):
            return "down"
    """
)


@pytest.fixture
def fake_module(tmp_path: Path) -> Iterator[str]:
    name = f"fakesgl_{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "engine.py").write_text(MODULE_SOURCE)
    sys.path.insert(0, str(tmp_path))
    try:
        yield f"{name}.engine"
    finally:
        sys.path.remove(str(tmp_path))
        for mod in [m for m in sys.modules if m.startswith(name)]:
            del sys.modules[mod]


def counting_wrapper(tag: str) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        _shared.count_reached(tag)
        return ("wrapped", wrapped(*args, **kwargs))

    return wrapper


class Replacement:
    def __init__(self, original: Any) -> None:
        self.original = original


def patches_for(module: str, tag: str) -> list[Patch]:
    return [
        Patch(f"{tag}-set_envs", module, "set_envs", "test", wrapper=counting_wrapper(f"{tag}-set_envs")),
        Patch(f"{tag}-launch", module, "Engine.launch", "test", wrapper=counting_wrapper(f"{tag}-launch")),
        Patch(f"{tag}-mp", module, "mp", "test", factory=Replacement),
        Patch(f"{tag}-watchdog", module, "Engine.watchdog", "", not_needed="upstream does it"),
    ]


@pytest.fixture
def owner() -> Iterator[str]:
    yield f"test-owner-{uuid.uuid4().hex[:6]}"


def originals(mod: Any) -> dict[str, Any]:
    return {"set_envs": vars(mod)["set_envs"], "launch": vars(mod.Engine)["launch"], "mp": vars(mod)["mp"]}


def test_patch_after_import_wraps_calls_and_unpatch_restores_identity(fake_module: str, owner: str) -> None:
    mod = importlib.import_module(fake_module)
    before = originals(mod)
    patcher = Patcher(owner, patches_for(fake_module, owner))
    patcher.patch()
    try:
        assert mod.set_envs(1) == ("wrapped", ("original", 1))
        assert mod.Engine.launch(2) == ("wrapped", ("Engine", 2))  # classmethod stays a classmethod
        assert isinstance(mod.mp, Replacement) and mod.mp.original is before["mp"]
        states = {s.name: (s.state, s.reached) for s in patcher.status()}
        assert states[f"{owner}-set_envs"] == ("applied", 1)
        assert states[f"{owner}-launch"] == ("applied", 1)
        assert states[f"{owner}-watchdog"][0] == "not needed"
    finally:
        patcher.unpatch()
    after = originals(mod)
    for key in before:
        assert after[key] is before[key], key
    assert mod.set_envs(3) == ("original", 3)
    assert {s.state for s in patcher.status() if not s.reason.startswith("upstream")} <= {"off", "not needed"}


def test_patch_before_import_lands_through_the_post_import_hook(fake_module: str, owner: str) -> None:
    assert fake_module not in sys.modules
    patcher = Patcher(owner, patches_for(fake_module, owner))
    patcher.patch()
    try:
        assert {s.state for s in patcher.status() if s.state != "not needed"} == {"pending import"}
        mod = importlib.import_module(fake_module)
        assert mod.set_envs(1) == ("wrapped", ("original", 1))
        assert _shared.marker_of(vars(mod)["set_envs"]) == {"owner": owner, "patch": f"{owner}-set_envs"}
    finally:
        patcher.unpatch()


def test_patch_is_idempotent(fake_module: str, owner: str) -> None:
    mod = importlib.import_module(fake_module)
    patcher = Patcher(owner, patches_for(fake_module, owner))
    patcher.patch()
    first = vars(mod)["set_envs"]
    patcher.patch()
    patcher.patch()
    try:
        assert vars(mod)["set_envs"] is first
        assert mod.set_envs(0) == ("wrapped", ("original", 0))  # wrapped once, not three times
    finally:
        patcher.unpatch()


def test_sixteen_threads_racing_apply_exactly_once(fake_module: str, owner: str) -> None:
    mod = importlib.import_module(fake_module)
    original = vars(mod)["set_envs"]
    patchers = [Patcher(owner, patches_for(fake_module, owner)) for _ in range(16)]
    barrier = threading.Barrier(16)
    errors: list[BaseException] = []

    def race(p: Patcher) -> None:
        try:
            barrier.wait()
            p.patch()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(p,)) for p in patchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors
        installed = vars(mod)["set_envs"]
        assert installed.__wrapped__ is original  # exactly one layer
        assert mod.set_envs(5) == ("wrapped", ("original", 5))
    finally:
        patchers[0].unpatch()
    assert vars(mod)["set_envs"] is original


def test_a_second_copy_sees_the_patches_and_does_not_stack(fake_module: str, owner: str) -> None:
    mod = importlib.import_module(fake_module)
    original = vars(mod)["set_envs"]
    first = Patcher(owner, patches_for(fake_module, owner))
    second = Patcher(owner + "-vendored", patches_for(fake_module, owner))
    first.patch()
    second.patch()
    try:
        assert vars(mod)["set_envs"].__wrapped__ is original
        assert [s.as_dict() for s in first.status()] == [s.as_dict() for s in second.status()]
        assert {s.owner for s in second.status() if s.state == "applied"} == {owner}
    finally:
        second.unpatch()  # unpatching from either copy restores everything
    assert vars(mod)["set_envs"] is original
    assert not first.armed and not second.armed


def test_unpatch_leaves_someone_elses_wrapper_in_place(fake_module: str, owner: str) -> None:
    mod = importlib.import_module(fake_module)
    patcher = Patcher(owner, patches_for(fake_module, owner))
    patcher.patch()
    ours = vars(mod)["set_envs"]

    def theirs(server_args: Any) -> Any:
        return ("theirs", ours(server_args))

    mod.set_envs = theirs
    assert {s.name: s.state for s in patcher.status()}[f"{owner}-set_envs"] == "overwritten"
    patcher.unpatch()
    assert vars(mod)["set_envs"] is theirs
    # our wrapper inside theirs is disabled by wrapt's enabled= switch once unpatched
    assert mod.set_envs(1) == ("theirs", ("original", 1))


def test_a_missing_required_target_fails_loudly_and_applies_nothing(fake_module: str, owner: str) -> None:
    mod = importlib.import_module(fake_module)
    original = vars(mod)["set_envs"]
    broken = [
        Patch("ok", fake_module, "set_envs", "t", wrapper=counting_wrapper("ok")),
        Patch("missing", fake_module, "Engine.gone", "t", wrapper=counting_wrapper("missing")),
    ]
    patcher = Patcher(owner, broken)
    with pytest.raises(PatchTargetError, match=r"Engine\.gone"):
        patcher.patch()
    assert vars(mod)["set_envs"] is original  # nothing half-applied
    patcher.unpatch()


def test_optional_targets_may_be_absent(fake_module: str, owner: str) -> None:
    importlib.import_module(fake_module)
    patcher = Patcher(
        owner, [Patch("maybe", fake_module, "Engine.gone", "t", wrapper=counting_wrapper("m"), optional=True)]
    )
    patcher.patch()
    try:
        assert patcher.status()[0].state == "absent"
    finally:
        patcher.unpatch()


def test_patch_records_need_exactly_one_of_wrapper_and_factory() -> None:
    with pytest.raises(ValueError):
        Patch("x", "m", "a", "r")
    with pytest.raises(ValueError):
        Patch("x", "m", "a", "r", wrapper=counting_wrapper("x"), factory=Replacement)
    with pytest.raises(ValueError):
        Patcher("o", [Patch("x", "m", "a", "", not_needed="n"), Patch("x", "m", "b", "", not_needed="n")])


def test_thousand_cycles_leave_no_growth(fake_module: str, owner: str) -> None:
    import gc

    import wrapt.importer

    mod = importlib.import_module(fake_module)
    original = vars(mod)["set_envs"]
    patcher = Patcher(owner, patches_for(fake_module, owner))
    patcher.patch()
    patcher.unpatch()
    gc.collect()
    hooks_before = sum(len(v) for v in wrapt.importer._post_import_hooks.values())
    records_before = len(_shared.state().records)
    objects_before = len(gc.get_objects())
    for _ in range(1000):
        patcher.patch()
        patcher.unpatch()
    gc.collect()
    assert vars(mod)["set_envs"] is original
    assert sum(len(v) for v in wrapt.importer._post_import_hooks.values()) == hooks_before
    assert len(_shared.state().records) == records_before
    assert len(gc.get_objects()) - objects_before < 200  # no per-cycle leak (1000 cycles)
