"""Command line: ``python -m sglang_roll_compat [doctor|versions|env|plan|smoke] …``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from . import doctor


def _doctor(args: argparse.Namespace) -> int:
    report, code = doctor.gather(import_engine=not args.no_import)
    print(json.dumps(report, indent=2, default=str) if args.json else doctor.render(report))
    return code


def _versions(args: argparse.Namespace) -> int:
    from . import _support_table, versions

    rows = [{"version": v, "family": _support_table.SUPPORTED_VERSIONS[v]} for v in versions.supported_versions()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['version']:<14} {row['family']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sglang_roll_compat",
        description="Doctor for SGLang inside RL frameworks: installed versions, support verdict, patches.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--no-import", action="store_true", help="do not import SGLang's engine module")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command")
    d = sub.add_parser("doctor", help="the default: installed facts, verdict, matrix, patch status")
    d.add_argument("--json", action="store_true")
    d.add_argument("--no-import", action="store_true")
    v = sub.add_parser("versions", help="the supported SGLang versions and their families")
    v.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    command = args.command or "doctor"
    handlers = {"doctor": _doctor, "versions": _versions}
    try:
        return handlers[command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the doctor reports, it does not crash with a traceback
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return doctor.EXIT_ERROR
