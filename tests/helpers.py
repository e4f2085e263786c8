"""Shared test helpers: fake SGLang installs for the version gate, subprocess runners."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_FAKE_VERSION = "0.5.2"


def package_parent() -> Path:
    """The directory holding the sglang_roll_compat under test (without importing it)."""
    spec = importlib.util.find_spec("sglang_roll_compat")
    assert spec is not None and spec.submodule_search_locations, "sglang_roll_compat is not importable"
    return Path(next(iter(spec.submodule_search_locations))).parent


def engine_args(**overrides: object) -> dict[str, object]:
    """Server args every CPU test uses: the shipped tiny Qwen2 config, dummy weights, no
    tokenizer, and ``device="cuda"``, so ServerArgs builds on a CPU machine and the real scheduler
    child, once started, fails for lack of a GPU (mem_fraction_static given: 0.4.6 would ask the
    missing GPU for its memory size to choose one)."""
    from sglang_roll_compat.models import tiny_model_path

    args: dict[str, object] = {
        "model_path": tiny_model_path(),
        "load_format": "dummy",
        "device": "cuda",
        "skip_tokenizer_init": True,
        "disable_cuda_graph": True,
        "mem_fraction_static": 0.7,
    }
    args.update(overrides)
    return args


def make_fake_sglang(
    root: Path,
    metadata_version: str | None,
    declared_version: str | None = None,
    *,
    version_file: str = "version.py",
    extra_dist_infos: Sequence[str] = (),
) -> Path:
    """A metadata-only SGLang install under ``root`` (a directory to put first on sys.path).

    It has the package ``sglang`` (``__init__`` and a version file) and, when
    ``metadata_version`` is given, ``sglang-<v>.dist-info/METADATA``. Nothing of SGLang's code:
    tests that need the real engine are marked ``sglang`` and run in the version sessions.
    """
    declared = metadata_version if declared_version is None else declared_version
    pkg = root / "sglang"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text(f"from sglang.{version_file[:-3]} import __version__\n")
    (pkg / version_file).write_text(f"__version__ = version = {declared!r}\n")
    for version in ([metadata_version] if metadata_version is not None else []) + list(extra_dist_infos):
        dist = root / f"sglang-{version}.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: sglang\nVersion: {version}\n\nbody\n")
    return root


def child_env(
    first: Sequence[Path | str] = (),
    *,
    env: Mapping[str, str | None] | None = None,
    last: Sequence[Path | str] = (),
) -> dict[str, str]:
    """This process's environment for a child interpreter: ``first``, the package under test and
    the inherited ``PYTHONPATH``, then ``last``, on its path; ``env`` entries set (``None``:
    removed)."""
    full = dict(os.environ)
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    paths = [*map(str, first), str(package_parent()), full.get("PYTHONPATH", ""), *map(str, last)]
    full["PYTHONPATH"] = os.pathsep.join(filter(None, paths))
    return full


def _kill_session(pgid: int) -> list[str]:
    """SIGKILL every process left in session ``pgid``; their names and pids."""
    import psutil

    left = []
    for proc in psutil.process_iter(["name", "status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except (OSError, psutil.Error):
            continue
    kill_all(left)
    return [f"{proc.info['name']}({proc.pid})" for proc in left]


def kill_all(procs: Sequence[Any]) -> None:
    """SIGKILL these ``psutil.Process`` objects and wait (10 s at most) until they are gone."""
    import psutil

    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def run_isolated(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` the way every test child that may start SGLang processes runs: in a session
    of its own, its output going to files, not pipes, and waited for by its exit alone.

    An SGLang child orphaned when a scenario kills a launch (a detokenizer started a moment
    after the kill) would otherwise keep the captured pipes open and hold the test until its
    timeout. Whatever is left in the session afterwards is killed and named at the end of
    ``stderr``; a run past ``timeout`` is killed with its session and returns code -9."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
        note = ""
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            note = f"\n[run_isolated: still running after {timeout:.0f} s: killed with its session]"
            code = -9
        finally:
            left = _kill_session(proc.pid)
            proc.wait()
        if left:
            note += f"\n[run_isolated: killed what the run left behind: {', '.join(left)}]"
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(list(cmd), code, out.read(), err.read() + note)


def run_python(
    code: str,
    *,
    prepend: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``prepend`` first on its path."""
    full_env = child_env(prepend, env={"SGLANG_ROLL_COMPAT_FORCE_FAMILY": None, **(env or {})})
    # -P: the installed package, not the checkout in cwd
    return run_isolated([sys.executable, "-P", "-c", code], env=full_env, timeout=timeout, cwd=cwd)


def run_scenario_script(
    script: str,
    args: Sequence[str],
    *,
    probe: Path,
    cache: Path,
    timeout: float,
    env: Mapping[str, str | None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/<script> ARGS`` in a fresh interpreter, the tests folder and the package on its
    path, the child hooks' marker folder ``probe`` and a private cache root ``cache``; ``env``
    entries are set (``None``: removed). The scenario writes its own result file."""
    tests = Path(__file__).resolve().parent
    probe.mkdir(exist_ok=True)
    extra = {"SRC_PROBE_DIR": str(probe), "SGLANG_ROLL_COMPAT_CACHE_DIR": str(cache), **(env or {})}
    cmd = [sys.executable, str(tests / script), *args]
    return run_isolated(cmd, env=child_env([tests], env=extra), timeout=timeout)
