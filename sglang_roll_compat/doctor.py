"""The doctor: what is installed, whether it is supported, and what the shim does about it."""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
from typing import Any

from . import _support_table, sideeffects, versions
from ._version import __version__
from .errors import SGLangRollCompatError, UnsupportedVersionError

EXIT_OK, EXIT_ERROR, EXIT_UNSUPPORTED = 0, 1, 2


def _torch_facts() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            from importlib import metadata

            return {"version": metadata.version("torch"), "imported": False}
        except Exception as exc:
            return {"version": None, "error": f"{type(exc).__name__}: {exc}"}
    facts: dict[str, Any] = {"version": str(torch.__version__), "imported": True, "cuda_build": torch.version.cuda}
    try:
        available = bool(torch.cuda.is_available())
        facts["cuda_available"] = available
        if available:
            facts["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # a CPU build or a broken driver
        facts["cuda_available"] = False
        facts["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return facts


def _package() -> Any:
    return importlib.import_module(__name__.rpartition(".")[0])


def gather(import_engine: bool = True) -> tuple[dict[str, Any], int]:
    pkg = _package()
    started = time.perf_counter()
    report: dict[str, Any] = {
        "sglang_roll_compat": __version__,
        "package": pkg.__name__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "support_matrix": [
            {"version": v, "family": _support_table.SUPPORTED_VERSIONS[v]} for v in versions.supported_versions()
        ],
        "env": {
            k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", _support_table.FORCE_FAMILY_ENV) if k in os.environ
        },
    }
    code = EXIT_OK
    error = pkg.GATE_ERROR
    if error is not None:
        report["verdict"] = "unsupported" if isinstance(error, UnsupportedVersionError) else "error"
        report["error"] = str(error)
        report["sglang"] = {"version": getattr(error, "found", None)}
        report["torch"] = _torch_facts()
        code = EXIT_UNSUPPORTED if isinstance(error, UnsupportedVersionError) else EXIT_ERROR
        report["elapsed_s"] = round(time.perf_counter() - started, 3)
        return report, code
    selection = pkg.SELECTION
    report["sglang"] = {
        "version": selection.installed.version,
        "declared_version": selection.installed.declared_version,
        "location": selection.installed.package_dir,
        "version_source": selection.installed.source,
    }
    report["verdict"] = "forced" if selection.forced else "supported"
    report["family"] = {"name": pkg.FAMILY.name, "summary": pkg.FAMILY.summary}
    if import_engine:
        try:
            importlib.import_module("sglang.srt.entrypoints.engine")
            report["engine_module"] = "imported"
        except SGLangRollCompatError as exc:
            report["engine_module"] = f"patching failed: {exc}"
            code = EXIT_ERROR
        except Exception as exc:
            report["engine_module"] = f"import failed: {type(exc).__name__}: {exc}"
            code = EXIT_ERROR
    else:
        report["engine_module"] = "not imported (--no-import)"
    report["torch"] = _torch_facts()
    report["patches"] = [s.as_dict() for s in pkg.status()]
    report["side_effects"] = sideeffects.report()
    report["child_hooks"] = list(pkg.child_hooks())
    if import_engine:  # kernel-package metadata and the mount table: kept out of --no-import's budget
        from .preflight_checks import preflight

        report["preflight"] = [f.as_dict() for f in preflight({})]
    report["elapsed_s"] = round(time.perf_counter() - started, 3)
    return report, code


def render(report: dict[str, Any]) -> str:
    lines = [f"sglang_roll_compat {report['sglang_roll_compat']} ({report['package']}) on Python {report['python']}"]
    sgl = report.get("sglang", {})
    lines.append(f"SGLang:   {sgl.get('version')}  ({sgl.get('version_source', '')})")
    torch = report.get("torch", {})
    cuda = "CUDA available" if torch.get("cuda_available") else "no CUDA device"
    devices = ", ".join(torch.get("devices", []))
    lines.append(f"torch:    {torch.get('version')}  cuda build {torch.get('cuda_build')}; {cuda} {devices}".rstrip())
    lines.append(f"verdict:  {report['verdict'].upper()}")
    if "error" in report:
        lines.append("")
        lines.append(report["error"])
    if "family" in report:
        lines.append(f"family:   {report['family']['name']} — {report['family']['summary']}")
        lines.append(f"engine:   {report['engine_module']}")
    lines.append("")
    lines.append("Supported SGLang versions:")
    for row in report["support_matrix"]:
        mark = "*" if row["version"] == sgl.get("version") else " "
        lines.append(f"  {mark} {row['version']:<14} {row['family']}")
    if "patches" in report:
        lines.append("")
        lines.append("Patches:")
        for p in report["patches"]:
            lines.append(f"  {p['name']:<24} {p['state']:<15} reached={p['reached']:<3} {p['target']}")
            lines.append(f"  {'':<24} {p['reason']}")
    if report.get("side_effects"):
        lines.append("")
        lines.append("Side effects of importing SGLang's engine module:")
        for name, state in report["side_effects"].items():
            lines.append(f"  {name}: {state}")
    if "preflight" in report:
        lines.append("")
        lines.append("Preflight of this process (no server args; `preflight --server-args JSON` for an engine's):")
        if not report["preflight"]:
            lines.append("  nothing to report")
        for f in report["preflight"]:
            lines.append(f"  {f['level'].upper():<7} {f['code']}: {f['message']}")
    if report.get("child_hooks"):
        lines.append("")
        lines.append("Child hooks: " + ", ".join(report["child_hooks"]))
    return "\n".join(lines)
