"""Shared test helpers: fake SGLang installs for the version gate, subprocess runners."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

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


def run_python(
    code: str,
    *,
    prepend: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``prepend`` first on its path."""
    full_env = dict(os.environ)
    full_env.pop("SGLANG_ROLL_COMPAT_FORCE_FAMILY", None)
    if env:
        full_env.update(env)
    paths = [str(p) for p in prepend] + [str(package_parent())]
    if full_env.get("PYTHONPATH"):
        paths.append(full_env["PYTHONPATH"])
    full_env["PYTHONPATH"] = os.pathsep.join(paths)
    return subprocess.run(
        [sys.executable, "-P", "-c", code],  # -P: the installed package, not the checkout in cwd
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(cwd) if cwd else None,
    )


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
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tests), str(package_parent()), full_env.get("PYTHONPATH", "")])
    )
    full_env.update(SRC_PROBE_DIR=str(probe), SGLANG_ROLL_COMPAT_CACHE_DIR=str(cache))
    for name, value in (env or {}).items():
        if value is None:
            full_env.pop(name, None)
        else:
            full_env[name] = value
    return subprocess.run(
        [sys.executable, str(tests / script), *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )
