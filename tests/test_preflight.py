"""Preflight checks: allocator, NCCL agreement, thread, GPU selection, cache filesystems, kernel pins."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import child_env, run_isolated

from sglang_roll_compat import preflight_checks as pf
from sglang_roll_compat.envpolicy import EnvFacts
from sglang_roll_compat.preflight_checks import Finding, MetadataSource

REQUIRES = (
    "aiohttp",
    "numpy",
    'transformers==4.56.1; extra == "runtime-common"',
    'sgl-kernel==0.3.9.post2; extra == "srt"',
    'torch==2.8.0; extra == "srt"',
    'flashinfer_python==0.3.1; extra == "srt"',
    'torch; extra == "srt-hip"',
    'sgl-kernel==9.9.9; extra == "blackwell-other"',
    "not a requirement ((",
)
MATCHING = {"sglang": "0.5.2", "sgl-kernel": "0.3.9.post2", "torch": "2.8.0+cu128", "flashinfer-python": "0.3.1"}


def source(requires: Sequence[str] | None = REQUIRES, versions: Mapping[str, str] | None = None) -> MetadataSource:
    table = dict(MATCHING if versions is None else versions)

    def version(name: str) -> str | None:
        return table.get(name.replace("_", "-"))

    return MetadataSource(requires=lambda dist: requires, version=version)


def run(
    server_args: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    mounts: Path | str = "/nonexistent/mounts",
    **kw: Any,
) -> list[Finding]:
    env = {"SGLANG_ROLL_COMPAT_CACHE_DIR": "/local/cache", "NCCL_CUMEM_ENABLE": "0"}
    env.update(environ or {})
    kw.setdefault("facts", EnvFacts())
    kw.setdefault("metadata", source())
    kw.setdefault("gpu_present", False)
    kw.setdefault("on_main_thread", True)
    return pf.preflight(server_args or {}, env, mounts_path=str(mounts), **kw)


def codes(findings: Sequence[Finding]) -> dict[str, Finding]:
    return {f.code: f for f in findings}


def test_clean_environment_has_no_warnings() -> None:
    findings = run()
    assert all(f.level == "info" for f in findings), findings
    assert all(f.level in pf.LEVELS for f in findings)
    assert codes(findings)["kernel-version-ok"].as_dict()["level"] == "info"
    assert pf.worst(findings) == "info"
    assert pf.worst([]) is None


def test_invalid_server_args() -> None:
    found = codes(run({"mem_fraction_static": 2, "tp_size": 0}))
    assert found["server-args-invalid"].level == "error"
    assert "mem_fraction_static" in found["server-args-invalid"].message
    with pytest.raises(TypeError):
        pf.preflight([("tp_size", 1)], {})  # type: ignore[arg-type]


# -- allocator --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"])
@pytest.mark.parametrize(
    ("value", "flagged"),
    [
        ("expandable_segments:True", True),
        ("max_split_size_mb:128, expandable_segments:true", True),
        ("expandable_segments:False", False),
        ("max_split_size_mb:128", False),
    ],
)
def test_expandable_segments_with_memory_saver(name: str, value: str, flagged: bool) -> None:
    found = codes(run({"enable_memory_saver": True}, {name: value}))
    assert ("alloc-conf-expandable-segments" in found) == flagged
    if flagged:
        assert found["alloc-conf-expandable-segments"].level == "warning"
        assert "removes it for SGLang's child processes" in found["alloc-conf-expandable-segments"].message
    assert "alloc-conf-expandable-segments" not in codes(run({}, {name: value}))


# -- NCCL -------------------------------------------------------------------------------------
def test_nccl_cumem_agreement() -> None:
    assert "nccl-cumem-mismatch" not in codes(run())
    unset = codes(run(environ={"NCCL_CUMEM_ENABLE": ""}))  # invalid: the engine uses 0
    assert unset["nccl-cumem-mismatch"].level == "warning"
    env = {"SGLANG_ROLL_COMPAT_CACHE_DIR": "/c"}
    missing = pf.preflight({}, env, facts=EnvFacts(), metadata=source(), gpu_present=False, mounts_path="/x")
    assert "unset" in codes(missing)["nccl-cumem-mismatch"].message
    symm = codes(run({"enable_symm_mem": True}))
    assert "will use '1'" in symm["nccl-cumem-mismatch"].message
    assert "nccl-cumem-mismatch" not in codes(run({"enable_symm_mem": True}, {"NCCL_CUMEM_ENABLE": "1"}))
    assert "nccl-cumem-mismatch" not in codes(run({}, {"NCCL_CUMEM_ENABLE": "1"}))  # the user's value is kept


def test_nccl_cumem_on_a_release_that_forces_it() -> None:
    facts = EnvFacts(symm_mem_args=False, nccl_nvls_arg=False, trtllm_pdl=False)
    found = codes(run({}, {"NCCL_CUMEM_ENABLE": "1"}, facts=facts))
    assert "will use '0'" in found["nccl-cumem-mismatch"].message


def test_nccl_uses_the_selected_family_by_default() -> None:
    import sglang_roll_compat

    findings = run(facts=None)
    assert "family-unknown" not in codes(findings)
    assert sglang_roll_compat.FAMILY.env is not None


# -- thread -----------------------------------------------------------------------------------
def test_off_main_thread_is_reported() -> None:
    results: list[list[Finding]] = []
    thread = threading.Thread(target=lambda: results.append(run(on_main_thread=None)))
    thread.start()
    thread.join()
    assert codes(results[0])["off-main-thread"].level == "info"
    assert "off-main-thread" not in codes(run(on_main_thread=None))
    assert "off-main-thread" in codes(run(on_main_thread=False))


# -- GPU selection ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("visible", "args", "code"),
    [
        ("4,5", {"base_gpu_id": 4}, "base-gpu-id-out-of-range"),
        ("4,5", {"base_gpu_id": 1, "tp_size": 2}, "base-gpu-id-out-of-range"),
        ("GPU-aaa,GPU-bbb", {"base_gpu_id": 2}, "base-gpu-id-out-of-range"),
        ("0,1", {"tp_size": 2, "dp_size": 2}, "base-gpu-id-out-of-range"),
        ("2,3,4,5", {"base_gpu_id": 2}, "base-gpu-id-looks-physical"),
        ("", {}, "cuda-visible-devices-empty"),
        ("-1", {}, "cuda-visible-devices-empty"),
        ("4,5", {"base_gpu_id": 0, "tp_size": 2}, None),
        ("0,1,2,3", {"base_gpu_id": 2}, None),
        ("0,1", {"tp_size": 2, "dp_size": 2, "enable_dp_attention": True}, None),
        ("GPU-aaa,GPU-bbb", {"base_gpu_id": 1}, None),
        (None, {"base_gpu_id": 6}, None),
    ],
)
def test_base_gpu_id_against_visible_devices(visible: str | None, args: dict[str, Any], code: str | None) -> None:
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    found = codes(run(args, env))
    gpu_codes = {c for c in found if "gpu-id" in c or "visible" in c}
    assert gpu_codes == ({code} if code else set())


def test_out_of_range_message_points_at_the_index() -> None:
    message = codes(run({"base_gpu_id": 4}, {"CUDA_VISIBLE_DEVICES": "4,5"}))["base-gpu-id-out-of-range"].message
    assert "index into CUDA_VISIBLE_DEVICES" in message and "physical GPU 4 is index 0" in message
    message = codes(run({"base_gpu_id": 2}, {"CUDA_VISIBLE_DEVICES": "2,3,4,5"}))["base-gpu-id-looks-physical"].message
    assert "physical GPU 4" in message and "use base_gpu_id=0" in message


# -- cache filesystems ------------------------------------------------------------------------
MOUNTS = """\
rootfs / rootfs rw 0 0
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/nfs nfs4 rw,vers=4.2 0 0
/dev/sdb1 /mnt/nfs/local ext4 rw 0 0
//srv/share /data\\040space cifs rw 0 0
user@host:/ /mnt/ssh fuse.sshfs rw 0 0
lustre@tcp:/fs /lustre lustre rw 0 0
"""


@pytest.fixture
def mounts(tmp_path: Path) -> Path:
    path = tmp_path / "mounts"
    path.write_text(MOUNTS)
    return path


@pytest.mark.parametrize(
    ("env", "flagged"),
    [
        ({"SGLANG_ROLL_COMPAT_CACHE_DIR": "/mnt/nfs/cache"}, "sglang_roll_compat's cache root"),
        ({"SGLANG_ROLL_COMPAT_CACHE_DIR": "/mnt/nfs"}, "sglang_roll_compat's cache root"),
        ({"TRITON_CACHE_DIR": "/data space/triton"}, "TRITON_CACHE_DIR"),
        ({"FLASHINFER_WORKSPACE_BASE": "/mnt/ssh/fi"}, "FLASHINFER_WORKSPACE_BASE"),
        ({"TRITON_CACHE_DIR": "/lustre/x/../y"}, "TRITON_CACHE_DIR"),
        ({"SGLANG_ROLL_COMPAT_CACHE_DIR": "/mnt/nfs/local/cache"}, None),
        ({"TRITON_CACHE_DIR": "/mnt/nfsx/triton"}, None),  # a prefix of the name, not of the path
        ({"TRITON_CACHE_DIR": "/data/triton"}, None),
        ({"XDG_CACHE_HOME": "/home/u/.cache"}, None),
    ],
)
def test_cache_on_network_filesystem(mounts: Path, env: dict[str, str], flagged: str | None) -> None:
    found = [f for f in run(environ=env, mounts=mounts) if f.code == "cache-on-network-fs"]
    assert [f.message.split(" /")[0] for f in found] == ([flagged] if flagged else [])
    for f in found:
        assert f.level == "warning" and "local disk" in f.message


def test_cache_through_a_symlink(mounts: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/mnt/nfs/real")
    found = codes(run(environ={"TRITON_CACHE_DIR": str(tmp_path / "link" / "triton")}, mounts=mounts))
    assert "nfs4" in found["cache-on-network-fs"].message


def test_unreadable_mounts_and_invalid_cache_root(tmp_path: Path) -> None:
    found = codes(run(mounts=tmp_path / "missing"))
    assert found["mounts-unreadable"].level == "info"
    found = codes(run(environ={"SGLANG_ROLL_COMPAT_CACHE_DIR": "relative/dir"}, mounts=tmp_path / "missing"))
    assert found["cache-root-invalid"].level == "error"


def test_mount_helpers(mounts: Path) -> None:
    table = pf.read_mounts(str(mounts))
    assert ("/data space", "cifs") in table
    assert pf.filesystem_of("/mnt/nfs/local/a", table) == ("/mnt/nfs/local", "ext4")
    assert pf.filesystem_of("/mnt/nfs/a", table) == ("/mnt/nfs", "nfs4")
    assert pf.filesystem_of("/etc", table) == ("/", "ext4")  # the last of two mounts on / wins
    assert pf.filesystem_of("/x", []) is None
    assert pf.is_network_fs("nfs4") and pf.is_network_fs("fuse.sshfs") and pf.is_network_fs("beegfs")
    assert not pf.is_network_fs("ext4") and not pf.is_network_fs("tmpfs") and not pf.is_network_fs("overlay")


# -- kernel pins ------------------------------------------------------------------------------
def test_pins_follow_the_cuda_runtime_extra() -> None:
    pins = pf.sglang_pins(REQUIRES)
    assert pins == {"sgl-kernel": "==0.3.9.post2", "torch": "==2.8.0", "flashinfer-python": "==0.3.1"}
    assert pf.sglang_pins(["sglang-kernel==0.4.0", "torch==2.9.1"]) == {"sglang-kernel": "==0.4.0", "torch": "==2.9.1"}


def test_matching_kernels() -> None:
    found = [f for f in run() if f.code.startswith("kernel")]
    assert [f.code for f in found] == ["kernel-version-ok"] * 3


def test_kernel_mismatch_and_missing() -> None:
    versions = dict(MATCHING, torch="2.13.0")
    del versions["sgl-kernel"]
    found = codes(run(metadata=source(versions=versions)))
    assert found["kernel-version-mismatch"].level == "warning"
    assert (
        "torch 2.13.0" in found["kernel-version-mismatch"].message
        and "==2.8.0" in found["kernel-version-mismatch"].message
    )
    assert found["kernel-missing"].level == "info"  # a CPU box
    found = codes(run(metadata=source(versions=versions), gpu_present=True))
    assert found["kernel-missing"].level == "warning"


def test_renamed_kernel_installed_instead() -> None:
    versions = dict(MATCHING, **{"sglang-kernel": "0.3.9.post2"})
    del versions["sgl-kernel"]
    found = codes(run(metadata=source(versions=versions)))
    assert found["kernel-missing"].level == "warning"
    assert "sglang-kernel 0.3.9.post2 is installed instead" in found["kernel-missing"].message


def test_kernel_facts_unknown() -> None:
    assert codes(run(metadata=source(requires=None)))["kernel-pins-unknown"].level == "info"
    found = [f for f in run(metadata=source(requires=["numpy"])) if f.code == "kernel-not-pinned"]
    assert len(found) == 3 and all(f.level == "info" for f in found)
    versions = dict(MATCHING, torch="not-a-version")
    assert "kernel-version-mismatch" in codes(run(metadata=source(versions=versions)))


def test_installed_requires_is_looked_up_once() -> None:
    pf._installed_requires.cache_clear()
    first = pf._installed_requires("sglang")
    second = pf._installed_requires("sglang")
    assert first == second
    assert pf._installed_requires.cache_info().hits >= 1
    assert pf._installed_requires("surely-not-an-installed-distribution") is None


def test_default_sources_run(tmp_path: Path) -> None:
    findings = pf.preflight({"tp_size": 1}, {"SGLANG_ROLL_COMPAT_CACHE_DIR": str(tmp_path)})
    assert all(isinstance(f, Finding) and f.level in pf.LEVELS for f in findings)
    assert "preflight" in pf.render([]) and "INFO" in pf.render([Finding("info", "x", "y")])


# -- CLI --------------------------------------------------------------------------------------
def _cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-P", "-m", "sglang_roll_compat", "preflight", *args]
    return run_isolated(cmd, env=child_env(env=env), timeout=120)


@pytest.mark.slow  # starts processes that import SGLang: CI runs it on its full-suite releases
def test_cli_preflight() -> None:
    result = _cli("--server-args", '{"tp_size": 1, "base_gpu_id": 4}', "--json", env={"CUDA_VISIBLE_DEVICES": "4,5"})
    data = json.loads(result.stdout)
    assert {"level", "code", "message"} <= set(data[0])
    assert "base-gpu-id-out-of-range" in {d["code"] for d in data}
    assert result.returncode == 1  # an error-level finding
    result = _cli("--server-args", "{not json")
    assert result.returncode == 1 and "not valid JSON" in result.stderr
    result = _cli("--server-args", "[1]")
    assert result.returncode == 1 and "JSON object" in result.stderr


# -- the real SGLang install ------------------------------------------------------------------
@pytest.mark.sglang
def test_real_sglang_pins_torch_and_kernels() -> None:
    requires = pf.INSTALLED.requires("sglang")
    assert requires is not None
    pins = pf.sglang_pins(requires)
    assert "torch" in pins
    found = [f for f in pf.preflight({}, {}, mounts_path="/nonexistent") if f.code.startswith("kernel")]
    assert {f.code for f in found} <= {
        "kernel-version-ok",
        "kernel-version-mismatch",
        "kernel-missing",
        "kernel-not-pinned",
    }
