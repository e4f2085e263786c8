"""Checks to run before ``Engine(...)`` is created: environment, GPU selection, caches, kernels.

``preflight(server_args)`` returns a list of :class:`Finding` (level ``info`` / ``warning`` /
``error``, a stable ``code``, a message). It starts nothing, imports no SGLang module and writes
nothing; every outside source (environment, mounts file, package metadata, GPU presence) can be
injected, so each check is testable on a CPU box.

Codes: ``server-args-invalid``, ``alloc-conf-expandable-segments``, ``nccl-cumem-mismatch``,
``family-unknown``, ``off-main-thread``, ``cuda-visible-devices-empty``,
``base-gpu-id-out-of-range``, ``base-gpu-id-looks-physical``, ``cache-root-invalid``,
``cache-on-network-fs``, ``mounts-unreadable``, ``kernel-pins-unknown``, ``kernel-not-pinned``,
``kernel-missing``, ``kernel-version-mismatch``, ``kernel-version-ok``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import envpolicy, serverargs, workspace
from .errors import ServerArgsError

logger = logging.getLogger(__name__)

INFO, WARNING, ERROR = "info", "warning", "error"
LEVELS = (INFO, WARNING, ERROR)

DEFAULT_MOUNTS = "/proc/mounts"
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "afs",
        "panfs",
        "wekafs",
        "juicefs",
        "9p",
        "fuse.sshfs",
        "fuse.ceph",
        "fuse.cephfs",
        "fuse.glusterfs",
        "fuse.juicefs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.rclone",
        "fuse.lustre",
        "fuse.beegfs",
    }
)

# (pin names, the installed names that may satisfy them): alternatives are one package renamed
KERNEL_PACKAGES: tuple[tuple[str, ...], ...] = (
    ("sgl-kernel", "sglang-kernel"),
    ("flashinfer-python",),
    ("torch",),
)
_PIN_EXTRA = "srt"  # SGLang's CUDA runtime extra (newer releases pin in the base requirements)


@dataclass(frozen=True)
class Finding:
    level: str  # info | warning | error
    code: str  # stable identifier, for machines and tests
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class MetadataSource:
    """Where package facts come from: ``requires(dist)`` gives the ``Requires-Dist`` lines of an
    installed distribution (None: not installed), ``version(dist)`` its version (None: missing)."""

    requires: Callable[[str], Sequence[str] | None]
    version: Callable[[str], str | None]


@functools.lru_cache(maxsize=8)
def _installed_requires(dist: str) -> tuple[str, ...] | None:
    import importlib.metadata

    try:
        return tuple(importlib.metadata.requires(dist) or ())
    except importlib.metadata.PackageNotFoundError:
        return None


def _installed_version(dist: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


INSTALLED = MetadataSource(requires=_installed_requires, version=_installed_version)


def _gpu_present() -> bool:
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/kfd"))


def preflight(
    server_args: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    facts: envpolicy.EnvFacts | None = None,
    mounts_path: str = DEFAULT_MOUNTS,
    metadata: MetadataSource | None = None,
    gpu_present: bool | None = None,
    on_main_thread: bool | None = None,
) -> list[Finding]:
    """Everything worth knowing before ``Engine(**server_args)`` is created, in this process.

    ``environ`` defaults to ``os.environ``; ``facts`` to the selected family's env facts;
    ``metadata`` to this interpreter's installed packages; ``gpu_present`` to a look for the
    NVIDIA (or ROCm) device nodes; ``on_main_thread`` to the calling thread.
    """
    if not isinstance(server_args, Mapping):
        raise TypeError(f"server_args must be a mapping, got {type(server_args).__name__}")
    env: Mapping[str, str] = os.environ if environ is None else environ
    findings: list[Finding] = []
    findings += _check_values(server_args)
    findings += _check_alloc_conf(server_args, env)
    findings += _check_nccl_cumem(server_args, env, facts)
    findings += _check_thread(on_main_thread)
    findings += _check_base_gpu_id(server_args, env)
    findings += _check_caches(env, mounts_path)
    findings += _check_kernels(metadata or INSTALLED, _gpu_present() if gpu_present is None else gpu_present)
    for finding in findings:  # the caller reports them; the log keeps a trace
        logger.debug("preflight %s %s: %s", finding.level, finding.code, finding.message)
    return findings


# -- server args --------------------------------------------------------------------------------
def _check_values(server_args: Mapping[str, Any]) -> list[Finding]:
    try:
        serverargs.check_values(server_args)
    except ServerArgsError as exc:
        return [Finding(ERROR, "server-args-invalid", str(exc))]
    return []


# -- allocator ----------------------------------------------------------------------------------
def _expandable_segments(value: str) -> bool:
    for item in value.split(","):
        key, _, setting = item.partition(":")
        if key.strip() == "expandable_segments" and setting.strip().lower() == "true":
            return True
    return False


def _check_alloc_conf(server_args: Mapping[str, Any], env: Mapping[str, str]) -> list[Finding]:
    if not server_args.get("enable_memory_saver", False):
        return []
    out = []
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):
        value = env.get(name)
        if value is not None and _expandable_segments(value):
            out.append(
                Finding(
                    WARNING,
                    "alloc-conf-expandable-segments",
                    f"{name}={value!r} enables expandable segments, which the memory saver "
                    "(enable_memory_saver=True) cannot work with: release/resume would fail or leak. "
                    "sglang_roll_compat removes it for SGLang's child processes (the trainer keeps its value); "
                    "without this package, unset it before creating the Engine",
                )
            )
    return out


# -- NCCL cuMem agreement ----------------------------------------------------------------------
def _check_nccl_cumem(
    server_args: Mapping[str, Any], env: Mapping[str, str], facts: envpolicy.EnvFacts | None
) -> list[Finding]:
    out = []
    if facts is None:
        facts, problem = envpolicy.selected_facts()
        if problem is not None:
            out.append(Finding(INFO, "family-unknown", f"{problem}: the env checks assume the newest family's facts"))
    engine = envpolicy.trainer_env(server_args, env, facts).get("NCCL_CUMEM_ENABLE")
    mine = env.get("NCCL_CUMEM_ENABLE")
    if engine is not None and mine != engine:
        shown = "unset (NCCL picks its own default)" if mine is None else repr(mine)
        out.append(
            Finding(
                WARNING,
                "nccl-cumem-mismatch",
                f"NCCL_CUMEM_ENABLE is {shown} in this process (the trainer) but the engine will use {engine!r}: "
                "NCCL peers that disagree hang or fail with 'invalid argument' in the weight-update group. "
                f"Set NCCL_CUMEM_ENABLE={engine} for the trainer "
                "(sglang_roll_compat.trainer_env(server_args) gives every variable to share)",
            )
        )
    return out


# -- thread -------------------------------------------------------------------------------------
def _check_thread(on_main_thread: bool | None) -> list[Finding]:
    if on_main_thread is None:
        on_main_thread = threading.current_thread() is threading.main_thread()
    if on_main_thread:
        return []
    return [
        Finding(
            INFO,
            "off-main-thread",
            "running off the main thread (a Ray async actor?): SGLang's signal handlers cannot be installed "
            "here; the launch patches skip them and a failing child is reported as EngineLaunchError",
        )
    ]


# -- GPU selection ------------------------------------------------------------------------------
def _gpu_count(server_args: Mapping[str, Any]) -> int:
    def number(name: str) -> int:
        value = server_args.get(name, 1)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    dp = 1 if server_args.get("enable_dp_attention", False) else number("dp_size")
    return max(number("tp_size") * number("pp_size") * dp // number("nnodes"), 1)


def _check_base_gpu_id(server_args: Mapping[str, Any], env: Mapping[str, str]) -> list[Finding]:
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return []
    visible = [v.strip() for v in raw.split(",") if v.strip()]
    if not visible or visible[0] == "-1":
        return [
            Finding(
                ERROR, "cuda-visible-devices-empty", f"CUDA_VISIBLE_DEVICES={raw!r} hides every GPU from the engine"
            )
        ]
    base = server_args.get("base_gpu_id", 0)
    step = server_args.get("gpu_id_step", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (base, step)) or base < 0:
        return []  # server-args-invalid reports it
    count = _gpu_count(server_args)
    last = base + (count - 1) * step
    physical_looking = all(v.isdigit() for v in visible)
    hint = ""
    if physical_looking and str(base) in visible:
        hint = f"; physical GPU {base} is index {visible.index(str(base))} of that list"
    if last >= len(visible):
        return [
            Finding(
                ERROR,
                "base-gpu-id-out-of-range",
                f"base_gpu_id={base} with {count} GPU(s) needs visible indices {base}..{last}, but "
                f"CUDA_VISIBLE_DEVICES={raw!r} lists {len(visible)}: base_gpu_id is an index into "
                f"CUDA_VISIBLE_DEVICES, not a physical GPU id{hint}",
            )
        ]
    if base != 0 and physical_looking and visible[0] != "0" and str(base) in visible:
        chosen = visible[base]
        return [
            Finding(
                WARNING,
                "base-gpu-id-looks-physical",
                f"base_gpu_id={base} selects index {base} of CUDA_VISIBLE_DEVICES={raw!r}, i.e. physical GPU "
                f"{chosen}; if you meant physical GPU {base}, use base_gpu_id={visible.index(str(base))}",
            )
        ]
    return []


# -- caches on network filesystems ----------------------------------------------------------------
def _unescape_mount(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal (``\\040``)."""
    out, i = [], 0
    while i < len(field):
        chunk = field[i : i + 4]
        if len(chunk) == 4 and chunk[0] == "\\" and all(c in "01234567" for c in chunk[1:]):
            out.append(chr(int(chunk[1:], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def read_mounts(path: str = DEFAULT_MOUNTS) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount listed in ``path`` (OSError if unreadable)."""
    mounts = []
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                mounts.append((_unescape_mount(parts[1]), parts[2]))
    return mounts


def filesystem_of(path: str, mounts: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The (mount point, fs type) holding ``path``: the longest mount-point prefix (last wins)."""
    best: tuple[str, str] | None = None
    for point, fstype in mounts:
        prefix = point.rstrip("/") + "/"
        if (path == point or path.startswith(prefix)) and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def is_network_fs(fstype: str) -> bool:
    return fstype in NETWORK_FS or fstype.startswith("nfs")


def _check_caches(env: Mapping[str, str], mounts_path: str) -> list[Finding]:
    out: list[Finding] = []
    paths: list[tuple[str, str]] = []
    try:
        paths.append(("sglang_roll_compat's cache root", str(workspace.cache_root(env))))
    except workspace.WorkspaceError as exc:
        out.append(Finding(ERROR, "cache-root-invalid", str(exc)))
    for name in ("TRITON_CACHE_DIR", "FLASHINFER_WORKSPACE_BASE"):
        if env.get(name):
            paths.append((name, env[name]))
    if not paths:
        return out
    try:
        mounts = read_mounts(mounts_path)
    except OSError as exc:
        out.append(
            Finding(
                INFO,
                "mounts-unreadable",
                f"cannot read {mounts_path} ({exc.strerror or exc}): cache filesystems not checked",
            )
        )
        return out
    for label, path in paths:
        resolved = os.path.realpath(os.path.abspath(path))
        where = filesystem_of(resolved, mounts)
        if where is not None and is_network_fs(where[1]):
            out.append(
                Finding(
                    WARNING,
                    "cache-on-network-fs",
                    f"{label} {path} is on {where[1]} (mounted at {where[0]}): JIT caches on a network filesystem "
                    "are slow and their file locks are unreliable across nodes; point "
                    f"{'SGLANG_ROLL_COMPAT_CACHE_DIR' if label.startswith('sglang') else label} at a local disk",
                )
            )
    return out


# -- kernel package pins ---------------------------------------------------------------------------
def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def sglang_pins(requires: Sequence[str]) -> dict[str, str]:
    """The version specifiers SGLang's ``Requires-Dist`` gives the kernel packages (canonical
    name -> specifier), as they apply with the CUDA runtime extra and on this platform."""
    from packaging.markers import UndefinedEnvironmentName
    from packaging.requirements import InvalidRequirement, Requirement

    wanted = {_canonical(n) for group in KERNEL_PACKAGES for n in group}
    pins: dict[str, str] = {}
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            logger.debug("unparsable Requires-Dist line %r", line)
            continue
        name = _canonical(req.name)
        if name not in wanted or not str(req.specifier):
            continue
        try:
            applies = req.marker is None or req.marker.evaluate({"extra": _PIN_EXTRA})
        except UndefinedEnvironmentName:
            applies = False
        if applies and name not in pins:
            pins[name] = str(req.specifier)
    return pins


def _check_kernels(metadata: MetadataSource, gpu_present: bool) -> list[Finding]:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    requires = metadata.requires("sglang")
    if requires is None:
        return [
            Finding(INFO, "kernel-pins-unknown", "SGLang's package metadata is not installed: kernel pins not checked")
        ]
    sglang_version = metadata.version("sglang") or "?"
    pins = sglang_pins(requires)
    out: list[Finding] = []
    for group in KERNEL_PACKAGES:
        pinned = [n for n in group if _canonical(n) in pins]
        if not pinned:
            out.append(Finding(INFO, "kernel-not-pinned", f"SGLang {sglang_version} does not pin {' / '.join(group)}"))
            continue
        name = pinned[0]
        spec = pins[_canonical(name)]
        installed = metadata.version(name)
        other = next(((n, v) for n in group if n != name for v in [metadata.version(n)] if v is not None), None)
        if installed is None:
            found = f"; {other[0]} {other[1]} is installed instead" if other else ""
            level = WARNING if gpu_present or other else INFO
            out.append(
                Finding(
                    level,
                    "kernel-missing",
                    f"{name} is not installed (SGLang {sglang_version} pins {name}{spec}){found}"
                    + ("" if gpu_present else "; expected on a machine without a GPU"),
                )
            )
            continue
        try:
            ok = SpecifierSet(spec).contains(Version(installed), prereleases=True)
        except InvalidVersion:
            ok = False
        if ok:
            out.append(
                Finding(INFO, "kernel-version-ok", f"{name} {installed} matches SGLang {sglang_version}'s {spec}")
            )
        else:
            out.append(
                Finding(
                    WARNING,
                    "kernel-version-mismatch",
                    f"{name} {installed} is installed but SGLang {sglang_version} pins {name}{spec}: kernels built "
                    f"for another release may fail to load or misbehave; pip install '{name}{spec}'",
                )
            )
    return out


def worst(findings: Iterable[Finding]) -> str | None:
    """The highest level among ``findings`` (None when there are none)."""
    levels = [f.level for f in findings]
    for level in reversed(LEVELS):
        if level in levels:
            return level
    return None


def render(findings: Sequence[Finding]) -> str:
    if not findings:
        return "preflight: nothing to report"
    return "\n".join(f"{f.level.upper():<7} {f.code}: {f.message}" for f in findings)
