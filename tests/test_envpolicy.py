"""The env policy (pure) and the per-worker directories (hostile names, planted links)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sglang_roll_compat import envpolicy, workspace
from sglang_roll_compat.envpolicy import CHILDREN, PROCESS, EnvFacts, Worker

CACHE = {"SGLANG_ROLL_COMPAT_CACHE_DIR": "/cache/root"}


def plan(
    args: dict[str, object] | None = None, environ: dict[str, str] | None = None, *, user=None, facts=None, name="w0"
):  # type: ignore[no-untyped-def]
    env = dict(environ or {})
    return envpolicy.plan(
        args or {}, env, Worker(name, ("0",)), user_env=user, facts=facts or EnvFacts(), cache_environ=CACHE
    )


def by_name(changes: list[envpolicy.EnvChange]) -> dict[str, envpolicy.EnvChange]:
    return {c.name: c for c in changes}


def test_defaults_on_a_clean_environment() -> None:
    changes = by_name(plan())
    assert changes["NCCL_CUMEM_ENABLE"].new == "0"
    assert changes["NCCL_NVLS_ENABLE"].new == "0"
    assert changes["CUDA_DEVICE_MAX_CONNECTIONS"].new == "8"
    assert changes["CUDA_MODULE_LOADING"].new == "AUTO"
    assert changes["TRTLLM_ENABLE_PDL"].new == "1"
    assert changes["SGLANG_BLOCK_NONZERO_RANK_CHILDREN"].new == "0"
    assert (
        changes["FLASHINFER_WORKSPACE_BASE"].new == f"/cache/root/workers/{workspace.host_component()}/w-w0/flashinfer"
    )
    assert changes["TRITON_CACHE_DIR"].new.endswith("/w-w0/triton")
    assert changes["FLASHINFER_WORKSPACE_BASE"].scope == CHILDREN
    assert not any(c.warn for c in changes.values())


def test_order_is_stable_and_every_name_is_managed() -> None:
    names = [c.name for c in plan(environ={"PYTORCH_CUDA_ALLOC_CONF": "x", "PYTORCH_ALLOC_CONF": "y"})]
    assert names == list(envpolicy.MANAGED_NAMES)


def test_a_value_the_user_set_is_restored_after_upstream_overwrote_it() -> None:
    after_upstream = {"CUDA_DEVICE_MAX_CONNECTIONS": "8"}
    change = by_name(plan(environ=after_upstream, user={"CUDA_DEVICE_MAX_CONNECTIONS": "1"}))[
        "CUDA_DEVICE_MAX_CONNECTIONS"
    ]
    assert (change.old, change.new, change.action) == ("8", "1", "set")
    assert "restored" in change.reason and not change.warn


def test_a_server_arg_that_requires_a_value_wins_loudly() -> None:
    changes = by_name(plan({"enable_symm_mem": True}, user={"NCCL_CUMEM_ENABLE": "0", "NCCL_NVLS_ENABLE": "0"}))
    assert changes["NCCL_CUMEM_ENABLE"].new == "1" and changes["NCCL_CUMEM_ENABLE"].warn
    assert changes["NCCL_NVLS_ENABLE"].new == "1" and changes["NCCL_NVLS_ENABLE"].warn


def test_user_nvls_value_is_respected_without_the_server_arg() -> None:
    environ = {"NCCL_NVLS_ENABLE": "0"}
    change = by_name(plan({"enable_nccl_nvls": False}, environ))["NCCL_NVLS_ENABLE"]
    assert change.new == "0" and change.action == "keep"
    assert by_name(plan({"enable_nccl_nvls": True}, environ))["NCCL_NVLS_ENABLE"].new == "1"


@pytest.mark.parametrize("odd", ["", "yes", "-1", "1.5", "0x1", " 1", "\u0661"])
def test_odd_user_values_are_reported_and_replaced(odd: str) -> None:
    changes = by_name(
        plan(environ={"NCCL_CUMEM_ENABLE": odd, "CUDA_DEVICE_MAX_CONNECTIONS": odd, "TRTLLM_ENABLE_PDL": odd})
    )
    for name, default in (("NCCL_CUMEM_ENABLE", "0"), ("CUDA_DEVICE_MAX_CONNECTIONS", "8"), ("TRTLLM_ENABLE_PDL", "1")):
        assert changes[name].new == default, name
        assert changes[name].warn, name
        assert "not valid" in changes[name].reason


def test_relative_or_nul_paths_are_not_used_as_workspaces() -> None:
    changes = by_name(plan(environ={"FLASHINFER_WORKSPACE_BASE": "relative/dir", "TRITON_CACHE_DIR": "/ok/dir"}))
    assert changes["FLASHINFER_WORKSPACE_BASE"].new.startswith("/cache/root/")
    assert changes["TRITON_CACHE_DIR"].new == "/ok/dir"


def test_allocator_settings_are_removed_for_children_only() -> None:
    environ = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    changes = plan(environ=environ)
    removal = by_name(changes)["PYTORCH_CUDA_ALLOC_CONF"]
    assert (removal.action, removal.scope, removal.new) == ("remove", CHILDREN, None)
    process_env = dict(environ)
    envpolicy.apply_to_process(changes, process_env)
    assert process_env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"  # the trainer keeps it
    assert ("PYTORCH_CUDA_ALLOC_CONF", None) in envpolicy.child_environment(changes)
    assert process_env["NCCL_CUMEM_ENABLE"] == "0"  # process-scope changes did apply


def test_old_release_keeps_upstream_nccl_values_and_says_so() -> None:
    facts = EnvFacts(symm_mem_args=False, nccl_nvls_arg=False, trtllm_pdl=False, cuda_device_max_connections="4")
    changes = by_name(
        plan({"enable_nccl_nvls": True}, {"NCCL_CUMEM_ENABLE": "0"}, user={"NCCL_CUMEM_ENABLE": "1"}, facts=facts)
    )
    assert changes["NCCL_CUMEM_ENABLE"].new == "0" and changes["NCCL_CUMEM_ENABLE"].warn
    assert "cannot be honoured" in changes["NCCL_CUMEM_ENABLE"].reason
    assert changes["NCCL_NVLS_ENABLE"].new == "1"
    assert "TRTLLM_ENABLE_PDL" not in changes
    assert changes["CUDA_DEVICE_MAX_CONNECTIONS"].new == "4"


def test_plan_is_pure() -> None:
    environ = {"CUDA_DEVICE_MAX_CONNECTIONS": "2"}
    snapshot = dict(os.environ)
    first = plan(environ=environ)
    assert plan(environ=environ) == first
    assert environ == {"CUDA_DEVICE_MAX_CONNECTIONS": "2"} and dict(os.environ) == snapshot


def test_trainer_env_matches_the_engine_side() -> None:
    newest = envpolicy.EnvFacts()
    assert envpolicy.trainer_env({}, environ={}, facts=newest) == {"NCCL_CUMEM_ENABLE": "0", "NCCL_NVLS_ENABLE": "0"}
    assert envpolicy.trainer_env({"enable_symm_mem": True}, environ={}, facts=newest)["NCCL_CUMEM_ENABLE"] == "1"
    assert envpolicy.trainer_env({}, environ={"NCCL_CUMEM_ENABLE": "1"}, facts=newest)["NCCL_CUMEM_ENABLE"] == "1"


def test_trainer_env_defaults_to_the_installed_family() -> None:
    """The trainer must agree with what the engine of *this* release will use: 0.4.6 forces its
    own NCCL values whatever the caller set."""
    from sglang_roll_compat import FAMILY, trainer_env
    from sglang_roll_compat.v046post4 import FAMILY as V046

    environ = {"NCCL_CUMEM_ENABLE": "1", "NCCL_NVLS_ENABLE": "1"}
    engine_side = {c.name: c.new for c in plan(environ=environ, facts=FAMILY.env)}
    assert trainer_env({}, environ=environ) == {n: engine_side[n] for n in ("NCCL_CUMEM_ENABLE", "NCCL_NVLS_ENABLE")}
    assert envpolicy.trainer_env({}, environ=environ, facts=V046.env) == {
        "NCCL_CUMEM_ENABLE": "0",
        "NCCL_NVLS_ENABLE": "0",
    }


def test_apply_only_changes_process_scope_names() -> None:
    environ: dict[str, str] = {}
    envpolicy.apply_to_process(plan(), environ)
    assert set(environ) == {c.name for c in plan() if c.scope == PROCESS and c.new is not None}
    assert "FLASHINFER_WORKSPACE_BASE" not in environ


# -- worker slots and directories ----------------------------------------------------------------
HOSTILE = ["../../etc", "/", "/etc/passwd", "a\x00b", "line\nbreak", "..", ".", "", "x" * 500, "ünï/cødé", "a/b", "a_b"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_worker_names_never_escape_the_base(name: str, tmp_path: Path) -> None:
    slot = workspace.worker_slot(name, ("3",))
    assert slot and "/" not in slot and "\x00" not in slot and "\n" not in slot
    assert not slot.startswith(".") and len(slot) <= 90
    env = {"SGLANG_ROLL_COMPAT_CACHE_DIR": str(tmp_path / "cache")}
    dirs = workspace.create_worker_dirs(slot, env)
    base = (tmp_path / "cache").resolve()
    for path in dirs.values():
        assert path.resolve().is_relative_to(base)
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.geteuid()


def test_distinct_names_get_distinct_slots() -> None:
    slots = {workspace.worker_slot(n, ("0",)) for n in ["a/b", "a_b", "a b", "a\nb", "A_b"]}
    assert len(slots) == 5


def test_missing_names_derive_a_stable_slot_from_gpus_or_rank() -> None:
    assert workspace.worker_slot("", ("4", "5")) == "gpu-4-5"
    assert workspace.worker_slot(None, ("4", "5")) == workspace.worker_slot("../..", ("4", "5")) == "gpu-4-5"
    assert workspace.worker_slot(None, (), {"RANK": "7"}) == "rank-7"
    assert workspace.worker_slot("", ("0",)) != workspace.worker_slot("", ("1",))


def test_gpu_ids_follow_cuda_visible_devices() -> None:
    assert workspace.physical_gpu_ids(0, 2, environ={"CUDA_VISIBLE_DEVICES": "4,5,6"}) == ["4", "5"]
    assert workspace.physical_gpu_ids(1, 1, environ={}) == ["1"]
    args = {"tp_size": 2, "base_gpu_id": 1}
    assert envpolicy.worker_from_args(args, None, {"CUDA_VISIBLE_DEVICES": "0,2,4"}).gpu_ids == ("2", "4")


def test_a_planted_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "workers").mkdir(parents=True)
    (root / "workers" / workspace.host_component()).symlink_to(elsewhere)
    with pytest.raises(workspace.WorkspaceError, match="not a plain directory"):
        workspace.create_worker_dirs("w-x", {"SGLANG_ROLL_COMPAT_CACHE_DIR": str(root)})
    assert list(elsewhere.iterdir()) == []


def test_a_too_open_directory_is_repaired(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    target = root / "workers"
    target.mkdir(parents=True)
    target.chmod(0o777)
    workspace.create_worker_dirs("w-x", {"SGLANG_ROLL_COMPAT_CACHE_DIR": str(root)})
    assert stat.S_IMODE(target.stat().st_mode) == 0o700


def test_a_directory_of_another_owner_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    workspace.create_worker_dirs("w-x", {"SGLANG_ROLL_COMPAT_CACHE_DIR": str(root)})
    real = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: real + 1)  # as if another user ran us
    with pytest.raises(workspace.WorkspaceError, match="belongs to uid"):
        workspace.create_worker_dirs("w-x", {"SGLANG_ROLL_COMPAT_CACHE_DIR": str(root)})


def test_relative_cache_root_is_refused() -> None:
    with pytest.raises(workspace.WorkspaceError):
        workspace.cache_root({"SGLANG_ROLL_COMPAT_CACHE_DIR": "relative"})
    assert workspace.cache_root({"XDG_CACHE_HOME": "/x"}) == Path("/x/sglang_roll_compat")
    assert workspace.cache_root({"XDG_CACHE_HOME": "rel"}).name == "sglang_roll_compat"


def test_unsafe_components_are_refused(tmp_path: Path) -> None:
    for bad in ["..", "a/b", "", ".hidden", "a\x00"]:
        with pytest.raises(workspace.WorkspaceError):
            workspace.ensure_private_dir(tmp_path, ["ok", bad])
