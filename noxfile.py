"""nox sessions: the whole test suite against every pinned SGLang release, on CPU.

Layout of the environments (``.nox/``), built with the virtualenv/pip backend (never uv: it
would resolve a multi-GB CUDA torch):

* ``.nox/_sglang-base`` — one shared venv: torch 2.13.0 (the machine's local CPU wheel),
  triton and every dependency that does not vary between SGLang releases (~2.1 GB, built once,
  rebuilt when ``envs/base.txt`` changes);
* ``.nox/test-sglang-<v>`` — one small venv per release (~0.2 GB): a ``.pth`` file puts the base
  on its path, then ``sglang==<v>`` goes in with ``--no-deps`` and the release's own pins
  (``envs/matrix.toml``) on top. Everything is idempotent, so ``nox -r`` is safe.

The list of releases comes from the package's own support table
(``sglang_roll_compat/_support_table.py``), loaded by path, so a supported version cannot miss
its session.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox
import tomllib
from packaging.version import Version

ROOT = Path(__file__).resolve().parent
ENVS = ROOT / "envs"
BASE = ROOT / ".nox" / "_sglang-base"


def _load_support_table():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_support_table", ROOT / "sglang_roll_compat" / "_support_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SUPPORT = _load_support_table()
VERSIONS = sorted(SUPPORT.SUPPORTED_VERSIONS, key=Version)
DEFAULT_VERSION = SUPPORT.DEFAULT_VERSION
MATRIX = tomllib.loads((ENVS / "matrix.toml").read_text())["versions"]
UNSUPPORTED_PROBE = "0.4.5.post3"  # a real release we refuse (older than any we test): its session checks the refusal


def _newest_per_family() -> list[str]:
    newest: dict[str, str] = {}
    for v in VERSIONS:
        newest[SUPPORT.SUPPORTED_VERSIONS[v]] = v  # VERSIONS is ascending
    return sorted(newest.values(), key=Version)


# CI (nox -t ci, what .ci/run runs) tests the newest release of every family: the full matrix of
# every pinned release (nox -t tests) takes longer than CI's budget on 2 cores. CI runs the whole
# suite on CI_FULL (the release whose engine really runs on a CPU) and, on the newest release of
# every other family, everything but the tests marked ``slow`` (those start processes that import
# SGLang, 5-60 s each; one launch scenario per family stays in: tests/test_launch.py's main-thread
# launch and its scheduler child hook).
CI_VERSIONS = _newest_per_family()
CI_FULL = ("0.5.2",)
XDIST_PIN = "pytest-xdist==3.8.0"  # a test dependency of the ci-sglang-<v> sessions only

nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [
    "lint",
    "typecheck",
    "unit",
    "test-unsupported",
    *[f"test-sglang-{v}" for v in CI_FULL],
    *[f"ci-sglang-{v}" for v in CI_VERSIONS if v not in CI_FULL],
    "test-ray",
]


# -- the shared base venv --------------------------------------------------------------------
def _base_python() -> Path:
    return BASE / "bin" / "python"


def _base_site() -> str:
    out = subprocess.run(
        [str(_base_python()), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _ensure_base(session: nox.Session) -> str:
    """Build the shared base venv once (under a file lock); return its site-packages path."""
    requirements = (ENVS / "base.txt").read_bytes()
    want = hashlib.sha256(requirements + sys.version.encode()).hexdigest()
    stamp = BASE / ".stamp"
    BASE.parent.mkdir(parents=True, exist_ok=True)
    with open(BASE.parent / "_sglang-base.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (stamp.exists() and stamp.read_text() == want and _base_python().exists()):
            session.log(f"building the shared base venv {BASE} (torch 2.13.0 CPU, triton, common deps)")
            shutil.rmtree(BASE, ignore_errors=True)
            # run_install: these are install steps, so `nox --install-only` builds the base too
            session.run_install(sys.executable, "-m", "venv", str(BASE), external=True)
            pip = [str(_base_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
            session.run_install(*pip, "torch==2.13.0", external=True)
            session.run_install(
                *pip, "-r", str(ENVS / "base.txt"), "-c", str(_torch_constraint(session)), external=True
            )
            stamp.write_text(want)
    return _base_site()


def _torch_constraint(session: nox.Session) -> Path:
    path = Path(session.create_tmp()) / "torch-constraint.txt"
    path.write_text("torch==2.13.0\n")
    return path


def _session_site(session: nox.Session) -> str:
    # the session venv runs nox's own interpreter version (no python= on the sessions); computed,
    # not asked from the venv's python, so that `nox --install-only` works too
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return str(Path(session.virtualenv.location) / "lib" / version / "site-packages")


def _stub_path(version: str) -> str:
    stubs = ["common", *MATRIX[version].get("stubs", [])]
    return os.pathsep.join(str(ENVS / "stubs" / name) for name in stubs)


def install_sglang(session: nox.Session, version: str) -> dict[str, str]:
    """Make the session venv a base + ``sglang==version`` layer; return the env for running it."""
    if version not in MATRIX:
        session.error(f"envs/matrix.toml has no entry for SGLang {version}")
    base_site = _ensure_base(session)
    Path(_session_site(session), "_sglang_roll_compat_base.pth").write_text(base_site + "\n")
    pins = Path(session.create_tmp()) / f"pins-{version}.txt"
    pins.write_text("\n".join(["torch==2.13.0", *MATRIX[version].get("pins", [])]) + "\n")
    session.install("--disable-pip-version-check", "--no-deps", f"sglang=={version}")
    # the pins are requirements too: a pinned package that the base already has (triton for
    # 0.4.6) must be installed into this venv, where it shadows the base's copy
    session.install(
        "--disable-pip-version-check", "-r", str(ENVS / "layer.txt"), *MATRIX[version].get("pins", []), "-c", str(pins)
    )
    session.install("--disable-pip-version-check", "--no-deps", "--force-reinstall", ".")
    env = {
        "PYTHONPATH": _stub_path(version),
        "SGLANG_ROLL_COMPAT_EXPECT_SGLANG": version,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if MATRIX[version].get("cpu_engine"):
        env["SGLANG_ROLL_COMPAT_CPU_ENGINE"] = "1"  # the real-engine CPU tests must run here
    return env


# -- sessions -------------------------------------------------------------------------------
def _make_version_session(version: str) -> None:
    tags = ["sglang", "tests"] + (["ci"] if version in CI_FULL else [])

    @nox.session(name=f"test-sglang-{version}", tags=tags)
    def _session(session: nox.Session) -> None:
        """The whole suite against this release."""
        env = install_sglang(session, version)
        session.run("python", "-P", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs, env=env)

    if version in CI_VERSIONS and version not in CI_FULL:

        @nox.session(name=f"ci-sglang-{version}", tags=["ci"])
        def _ci_session(session: nox.Session) -> None:
            """CI's share for this family: the suite without the tests marked slow."""
            env = install_sglang(session, version)
            session.install("--disable-pip-version-check", XDIST_PIN)
            env["SGLANG_ROLL_COMPAT_EXAMPLES"] = "40"  # hypothesis examples per property (200 elsewhere)
            # two workers, each test file on one of them (module fixtures and scenario caches stay
            # per file): the 2-core CI box runs these sessions in about half the time
            args = ["-m", "not slow", "-n", "2", "--dist", "loadfile", *session.posargs]
            session.run("python", "-P", "-m", "pytest", "-p", "no:cacheprovider", *args, env=env)


for _version in VERSIONS:
    _make_version_session(_version)


@nox.session(name="test-unsupported", tags=["tests", "ci"])
def test_unsupported(session: nox.Session) -> None:
    """A real SGLang we refuse (0.4.5.post3, older than every tested one): importing the package must say so."""
    env = install_sglang(session, UNSUPPORTED_PROBE)
    env["SGLANG_ROLL_COMPAT_EXPECT_UNSUPPORTED"] = UNSUPPORTED_PROBE
    session.run(
        "python",
        "-P",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "tests/test_unsupported_install.py",
        *session.posargs,
        env=env,
    )


RAY_PIN = "ray==2.60.0"  # a test dependency of test-ray only (never in envs/base.txt)
RAY_SGLANG = "0.5.2"  # the release whose engine really runs on this CPU


@nox.session(name="test-ray", tags=["tests", "ci"])
def test_ray(session: nox.Session) -> None:
    """A real local Ray (loopback, no dashboard, started and stopped by the tests) with the real
    CPU engine of SGLang 0.5.2: the actor kinds frameworks use, ROLL's call pattern inside an async
    actor, runtime_env, and a scheduler killed under a waiting actor (tests/test_ray.py)."""
    env = install_sglang(session, RAY_SGLANG)
    session.install("--disable-pip-version-check", RAY_PIN)
    env["SGLANG_ROLL_COMPAT_RAY"] = "1"  # the Ray tests must run here (they skip elsewhere)
    args = session.posargs or ["tests/test_ray.py"]
    session.run("python", "-P", "-m", "pytest", "-p", "no:cacheprovider", *args, env=env)


@nox.session(tags=["tests", "ci"])
def unit(session: nox.Session) -> None:
    """No SGLang installed: version detection, errors and every pure module."""
    session.install("--disable-pip-version-check", ".[test]")
    session.run(
        "python", "-P", "-m", "pytest", "-p", "no:cacheprovider", *session.posargs, env={"SGLANG_ROLL_COMPAT_UNIT": "1"}
    )


@nox.session(tags=["tests", "ci"])
def lint(session: nox.Session) -> None:
    session.install("--disable-pip-version-check", "ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(tags=["tests", "ci"])
def typecheck(session: nox.Session) -> None:
    session.install("--disable-pip-version-check", "mypy==2.4.1", "wrapt", "packaging", "types-psutil", "types-PyYAML")
    session.run("mypy")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: the doctor (python -m sglang_roll_compat) on the default pinned SGLang."""
    version = session.posargs[0] if session.posargs else DEFAULT_VERSION
    env = install_sglang(session, version)
    session.run("python", "-m", "sglang_roll_compat", env=env)


# -- benchmarks (issue 7) -------------------------------------------------------------------------
def _bench_version(args: list[str]) -> tuple[str, list[str]]:
    """``--sglang <v>`` (or ``--sglang=<v>``) out of the posargs; the rest go to benchmarks/run.py."""
    version, rest = DEFAULT_VERSION, []
    it = iter(args)
    for arg in it:
        if arg == "--sglang":
            version = next(it, "")
        elif arg.startswith("--sglang="):
            version = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return version, rest


def _reset_bench_layer(session: nox.Session, version: str) -> None:
    """A reused bench venv that holds another release's layer: uninstall that layer first (only
    what lives in this venv; pip leaves the shared base alone, it is outside the environment)."""
    stamp = Path(session.virtualenv.location) / ".sglang-layer"
    if stamp.exists() and stamp.read_text().strip() not in ("", version):
        session.log(f"the bench venv holds SGLang {stamp.read_text().strip()}: removing that layer first")
        frozen = session.run("python", "-m", "pip", "freeze", "--local", "--disable-pip-version-check", silent=True)
        names = [
            line.split("==")[0].split(" @ ")[0].strip()
            for line in str(frozen).splitlines()
            if line.strip() and not line.startswith(("#", "-e"))
        ]
        names = [n for n in names if n.lower() not in ("pip", "setuptools", "wheel")]
        if names:
            session.run("python", "-m", "pip", "uninstall", "-y", "--disable-pip-version-check", *names, silent=True)
    stamp.unlink(missing_ok=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, not a test: import cost, patch/unpatch, facade overhead, env policy, doctor.

    ``nox -s bench`` measures SGLang 0.5.2; ``nox -s bench -- --sglang 0.5.7`` another supported
    release; other arguments go to ``python -m benchmarks.run`` (``--runs``, ``--only``, ``--help``).
    Prints medians with min/max and side-by-side ratios with PASS/FAIL per target, writes
    ``bench-results/*.json`` and a Markdown summary. A FAIL does not fail the session; an error does.
    """
    version, args = _bench_version(list(session.posargs))
    if version not in SUPPORT.SUPPORTED_VERSIONS:
        session.error(f"--sglang {version!r}: not in the support table; supported: {', '.join(VERSIONS)}")
    _reset_bench_layer(session, version)
    env = install_sglang(session, version)
    (Path(session.virtualenv.location) / ".sglang-layer").write_text(version)
    session.run("python", "-m", "benchmarks.run", *args, env=env)
