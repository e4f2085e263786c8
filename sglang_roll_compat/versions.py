"""Find the installed SGLang release without importing it, and map it to a patch family.

The version comes from the ``sglang-<v>.dist-info`` directory that sits next to the ``sglang``
package that Python would import (one directory listing and one small file read: far cheaper
than an ``importlib.metadata`` lookup, which scans every ``sys.path`` entry). The package's own
``__version__`` is read from its source text (or from the module when it is already imported)
and must agree: two disagreeing answers mean a broken install, and we refuse to guess.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ._support_table import FORCE_FAMILY_ENV, SUPPORTED_VERSIONS
from .errors import BrokenInstallError, SGLangNotInstalledError, UnsupportedVersionError

logger = logging.getLogger(__name__)

_VERSION_ASSIGN = re.compile(
    r"""^(?:__version__|version)\s*(?::\s*str\s*)?=\s*(?:__version__\s*=\s*|version\s*=\s*)?['"]([^'"]+)['"]""",
    re.MULTILINE,
)
_MAX_SHOWN = 80  # characters of a hostile version string that an error message repeats


@dataclass(frozen=True)
class InstalledSGLang:
    """What is installed: the metadata version, where it lives, and how we learnt it."""

    version: str
    package_dir: str
    source: str  # "dist-info <path>" or "importlib.metadata"
    declared_version: str | None  # sglang.__version__ (None when it cannot be read statically)


@dataclass(frozen=True)
class Selection:
    """The support verdict for an installed SGLang."""

    installed: InstalledSGLang
    family: str
    forced: bool  # True when FORCE_FAMILY_ENV chose the family


def supported_versions() -> tuple[str, ...]:
    """Every tested SGLang release, oldest first."""
    return tuple(sorted(SUPPORTED_VERSIONS, key=Version))


def families() -> tuple[str, ...]:
    """Every patch family name, in the order of their oldest release."""
    seen: dict[str, None] = {}
    for v in supported_versions():
        seen.setdefault(SUPPORTED_VERSIONS[v], None)
    return tuple(seen)


def versions_of(family: str) -> tuple[str, ...]:
    return tuple(v for v in supported_versions() if SUPPORTED_VERSIONS[v] == family)


def _shown(text: str) -> str:
    if len(text) <= _MAX_SHOWN:
        return text
    return f"{text[:_MAX_SHOWN]}... ({len(text)} characters)"


def family_for(version: str) -> str:
    """The family of an exact tested release, else :class:`UnsupportedVersionError`.

    Only exact releases count: ``0.5.2rc1``, ``0.5.2+local`` and ``0.5.2.post1`` are different
    releases from ``0.5.2``. Any string at all gives a family or that error, never another one.
    """
    text = str(version)
    try:
        if text != text.strip() or not text.isprintable():
            raise InvalidVersion(text)  # PEP 440 tolerates padding; package metadata never has it
        parsed = Version(text)
    except (InvalidVersion, ValueError):  # ValueError: a number int() refuses (> 4300 digits)
        raise UnsupportedVersionError(
            _shown(text), supported_versions(), hint="(That is not a valid PEP 440 version.)"
        ) from None
    for candidate, family in SUPPORTED_VERSIONS.items():
        if Version(candidate) == parsed:
            return family
    raise UnsupportedVersionError(_shown(text), supported_versions(), hint=_nearest_hint(parsed))


def _nearest_hint(parsed: Version) -> str:
    same_release = [v for v in supported_versions() if Version(v).release == parsed.release]
    if same_release and parsed.local:
        return "(Local builds ('+...') are not the tested wheels; install the release from PyPI.)"
    if parsed.is_prerelease or parsed.is_devrelease:
        return "(Pre-releases and dev builds are not tested.)"
    return ""


def _read_metadata_version(dist_info: Path) -> str:
    with open(dist_info / "METADATA", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                break  # end of the header block
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    raise BrokenInstallError(f"{dist_info}/METADATA has no Version header: broken SGLang install.")


def _declared_version(package_dir: Path) -> str | None:
    module = sys.modules.get("sglang")
    if module is not None and getattr(module, "__file__", None):
        declared = getattr(module, "__version__", None)
        return str(declared) if declared is not None else None
    for name in ("_version.py", "version.py"):
        try:
            text = (package_dir / name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        match = _VERSION_ASSIGN.search(text)
        if match:
            return match.group(1)
    return None


def find_installed() -> InstalledSGLang:
    """Locate the importable ``sglang`` package and its version, without importing SGLang."""
    try:
        spec = importlib.util.find_spec("sglang")
    except (ImportError, ValueError) as exc:  # a broken parent entry in sys.modules
        raise SGLangNotInstalledError(f"SGLang cannot be located: {exc}") from exc
    if spec is None or not spec.origin or spec.origin in ("namespace", "built-in"):
        raise SGLangNotInstalledError(
            "SGLang is not installed in this Python environment "
            f"({sys.executable}). sglang_roll_compat wraps an SGLang you install yourself: "
            "pip install 'sglang==<one of the supported versions>' "
            "(python -m sglang_roll_compat versions lists them)."
        )
    package_dir = Path(spec.origin).parent
    site_dir = package_dir.parent
    try:
        dist_infos = sorted(
            entry.name
            for entry in os.scandir(site_dir)
            if entry.name.lower().startswith("sglang-") and entry.name.endswith(".dist-info")
        )
    except OSError:
        dist_infos = []
    if len(dist_infos) > 1:
        raise BrokenInstallError(
            f"Several SGLang installs' metadata in {site_dir}: {', '.join(dist_infos)}. "
            "Reinstall SGLang (pip uninstall -y sglang; pip install 'sglang==<version>')."
        )
    if dist_infos:
        dist_info = site_dir / dist_infos[0]
        version = _read_metadata_version(dist_info)
        source = f"dist-info {dist_info}"
    else:  # editable or unusual install: fall back to the one full metadata lookup
        from importlib import metadata

        try:
            version = metadata.version("sglang")
        except metadata.PackageNotFoundError:
            raise BrokenInstallError(
                f"The sglang package at {package_dir} has no installed metadata "
                "(a source tree on sys.path?). Install SGLang with pip."
            ) from None
        source = "importlib.metadata"
    declared = _declared_version(package_dir)
    if declared is not None and declared != version:
        raise BrokenInstallError(
            f"Broken SGLang install: the package metadata says {_shown(version)!r} ({source}) "
            f"but sglang.__version__ is {_shown(declared)!r} ({package_dir}). "
            "Two installs are mixed; reinstall with pip install --force-reinstall 'sglang==<version>'."
        )
    return InstalledSGLang(version, str(package_dir), source, declared)


def select(installed: InstalledSGLang | None = None, environ: dict[str, str] | None = None) -> Selection:
    """The family for the installed SGLang; raises for an untested version unless forced."""
    installed = installed or find_installed()
    environ = dict(os.environ) if environ is None else environ
    forced = environ.get(FORCE_FAMILY_ENV, "").strip()
    try:
        family = family_for(installed.version)
    except UnsupportedVersionError as exc:
        if not forced:
            raise
        if forced not in families():
            raise UnsupportedVersionError(
                exc.found,
                exc.supported,
                hint=f"{FORCE_FAMILY_ENV}={_shown(forced)!r} names no family; families: {', '.join(families())}.",
            ) from None
        logger.warning(
            "%s=%s: FORCING patch family %r onto UNTESTED SGLang %s. Patches may fail or "
            "misbehave; this is not a supported configuration.",
            FORCE_FAMILY_ENV,
            forced,
            forced,
            _shown(installed.version),
        )
        return Selection(installed, forced, forced=True)
    if forced and forced != family:
        if forced not in families():
            raise UnsupportedVersionError(
                installed.version,
                supported_versions(),
                hint=f"{FORCE_FAMILY_ENV}={_shown(forced)!r} names no family; families: {', '.join(families())}.",
            )
        logger.warning(
            "%s=%s overrides the tested family %r of SGLang %s.",
            FORCE_FAMILY_ENV,
            forced,
            family,
            installed.version,
        )
        return Selection(installed, forced, forced=True)
    return Selection(installed, family, forced=False)
