"""Private per-worker directories under the user's cache directory.

Every directory this package creates lives under :func:`cache_root` (``$SGLANG_ROLL_COMPAT_CACHE_DIR``,
else ``$XDG_CACHE_HOME/sglang_roll_compat``, else ``~/.cache/sglang_roll_compat``), is created
mode 0700, must be owned by the current user, and is opened component by component without
following symlinks, so a hostile worker name or a planted link can never move it elsewhere.

A worker's slot name comes from its worker name, sanitised; without a usable name it comes from
the physical GPU ids the engine will use (or its rank), never from nothing: two workers must
never share a FlashInfer workspace or a Triton cache, and a worker must find its own cache again
on the next run (no cold JIT compile at every start).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "SGLANG_ROLL_COMPAT_CACHE_DIR"
_MAX_COMPONENT = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?")


class WorkspaceError(OSError):
    """A directory we would use is not private to this user and cannot be made so."""


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    explicit = env.get(CACHE_DIR_ENV, "")
    if explicit:
        if "\x00" in explicit or not os.path.isabs(explicit):
            raise WorkspaceError(f"{CACHE_DIR_ENV} must be an absolute path, got {explicit!r}")
        return Path(explicit)
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg) and "\x00" not in xdg:
        return Path(xdg) / "sglang_roll_compat"
    home = os.path.expanduser("~")
    if not os.path.isabs(home):  # HOME set to a relative path: never cache under the working directory
        raise WorkspaceError(
            f"cannot place the cache: HOME is the relative path {home!r}; "
            f"set {CACHE_DIR_ENV} or XDG_CACHE_HOME to an absolute path"
        )
    return Path(home) / ".cache" / "sglang_roll_compat"


def sanitize_component(name: str) -> str:
    """A single safe path component for ``name``, or ``""`` when nothing usable is left.

    Only ``[A-Za-z0-9._-]`` survive, leading and trailing dots and dashes go (no ``..``, no
    hidden names); when anything changed, a short hash of the original keeps two different names
    from meeting in one directory (``a/b`` and ``a_b`` stay apart).
    """
    cleaned = _UNSAFE.sub("_", name).strip("._-")[:_MAX_COMPONENT].rstrip("._-")
    if not cleaned:
        return ""
    if cleaned != name:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
        cleaned = f"{cleaned}-{digest}"
    return cleaned


def physical_gpu_ids(
    base_gpu_id: int, count: int, gpu_id_step: int = 1, environ: Mapping[str, str] | None = None
) -> list[str]:
    """The GPU ids an engine will use, mapped through ``CUDA_VISIBLE_DEVICES`` when it is set."""
    env = os.environ if environ is None else environ
    logical = [base_gpu_id + i * gpu_id_step for i in range(max(count, 1))]
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return [str(i) for i in logical]
    return [visible[i] if 0 <= i < len(visible) else f"logical{i}" for i in logical]


def worker_slot(
    worker_name: str | None,
    gpu_ids: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> str:
    """The stable, sanitised directory name of one worker (see the module docstring)."""
    if worker_name:
        slot = sanitize_component(worker_name)
        if slot:
            return f"w-{slot}"
    if gpu_ids:
        slot = sanitize_component("-".join(gpu_ids))
        if slot:
            return f"gpu-{slot}"
    env = os.environ if environ is None else environ
    for key in ("RANK", "LOCAL_RANK"):
        value = env.get(key, "")
        if value.isascii() and value.isdigit() and len(value) <= 20:  # "٣".isdigit() is True too
            return f"rank-{value}"
    return f"pid-{os.getpid()}"


def host_component() -> str:
    return sanitize_component(socket.gethostname()) or "host"


def _check_private(fd: int, path: Path, repair: bool) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise WorkspaceError(f"{path} is not a directory")
    if st.st_uid != os.geteuid():
        raise WorkspaceError(
            f"{path} belongs to uid {st.st_uid}, not to this user ({os.geteuid()}); refusing to use it"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        if not repair:
            raise WorkspaceError(f"{path} is accessible to other users (mode {oct(st.st_mode & 0o777)})")
        os.fchmod(fd, 0o700)
        logger.warning("%s was mode %s; repaired to 0700", path, oct(stat.S_IMODE(st.st_mode)))


def ensure_private_dir(base: Path, parts: Sequence[str], repair: bool = True) -> Path:
    """Create ``base/parts[0]/parts[1]/...`` as private directories and return the path.

    ``base`` is created (0700) when missing and must belong to this user. Each part must be a
    single sanitised component; each level is opened with ``O_NOFOLLOW`` relative to its parent,
    so a symlink planted anywhere below ``base`` is refused rather than followed.
    """
    for part in parts:
        if not _SAFE_COMPONENT.fullmatch(part):
            raise WorkspaceError(f"unsafe path component {part!r}")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_RDONLY | os.O_DIRECTORY
    fd = os.open(base, flags)
    try:
        _check_private(fd, base, repair)
        current = base
        for part in parts:
            current = current / part
            try:
                os.mkdir(part, 0o700, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise WorkspaceError(f"{current} is not a plain directory ({exc.strerror}); refusing it") from exc
            os.close(fd)
            fd = child
            _check_private(fd, current, repair)
        return current
    finally:
        os.close(fd)


def worker_dirs(slot: str, environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Where one worker's FlashInfer workspace base and Triton cache live (not created here)."""
    base = cache_root(environ) / "workers" / host_component() / slot
    return {"flashinfer": base / "flashinfer", "triton": base / "triton"}


def create_worker_dirs(slot: str, environ: Mapping[str, str] | None = None) -> dict[str, Path]:
    root = cache_root(environ)
    host = host_component()
    return {kind: ensure_private_dir(root, ["workers", host, slot, kind]) for kind in ("flashinfer", "triton")}
