"""Command line: ``python -m sglang_roll_compat [doctor|versions|env|plan|preflight|smoke] …``."""

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


def _plan(args: argparse.Namespace) -> int:
    from .errors import PlanError
    from .roll import planner

    try:
        plan = planner.plan_from_config(args.config, num_gpus_per_node=args.num_gpus_per_node, port_base=args.port_base)
    except PlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(plan.as_dict(), indent=2) if args.json else planner.render(plan))
    return 0


def _preflight(args: argparse.Namespace) -> int:
    from .preflight_checks import ERROR, preflight, render, worst

    try:
        server_args = _server_args_json(args.server_args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    findings = preflight(server_args)
    print(json.dumps([f.as_dict() for f in findings], indent=2) if args.json else render(findings))
    return 1 if worst(findings) == ERROR else 0


def _server_args_json(text: str | None) -> dict[str, object]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--server-args is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError("--server-args must be a JSON object")
    return value


def _env(args: argparse.Namespace) -> int:
    """The env policy's plan for one worker launched from this environment (changes nothing)."""
    import os

    from . import envpolicy, serverargs

    pkg = doctor._package()
    if pkg.GATE_ERROR is not None:
        print(f"error: {pkg.GATE_ERROR}", file=sys.stderr)
        return doctor.EXIT_UNSUPPORTED if isinstance(pkg.GATE_ERROR, NotImplementedError) else doctor.EXIT_ERROR
    try:
        server_args = _server_args_json(args.server_args)
        if server_args:
            serverargs.check_names(server_args)  # against the installed ServerArgs (imports it)
            serverargs.check_values(server_args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return doctor.EXIT_ERROR
    facts = pkg.FAMILY.env
    worker = envpolicy.worker_from_args(server_args, args.worker_name, os.environ, facts)
    changes = envpolicy.plan(server_args, os.environ, worker, facts=facts)
    report = {
        "family": pkg.FAMILY.name,
        "worker": {"name": worker.name, "gpu_ids": list(worker.gpu_ids), "slot": worker.slot},
        "changes": [c.as_dict() for c in changes],
        "note": "at launch the policy runs after SGLang's own _set_envs_and_config; values you set before "
        "the launch win unless a server argument requires otherwise (warn=true)",
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return doctor.EXIT_OK
    print(f"family {report['family']}; worker {worker.name!r}, GPUs {list(worker.gpu_ids)}, slot {worker.slot}")
    for c in changes:
        flag = " (!)" if c.warn else ""
        print(f"  {c.action:<6} {c.name:<34} {c.old!r} -> {c.new!r} [{c.scope}]{flag}  {c.reason}")
    print(report["note"])
    return doctor.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sglang_roll_compat",
        description="Doctor for SGLang inside RL frameworks: installed versions, support verdict, patches.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--no-import", action="store_true", help="do not import SGLang's engine module")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("smoke", help="GPU end-to-end run of the facade (see: smoke --help)")
    d = sub.add_parser("doctor", help="the default: installed facts, verdict, matrix, patch status")
    d.add_argument("--json", action="store_true")
    d.add_argument("--no-import", action="store_true")
    v = sub.add_parser("versions", help="the supported SGLang versions and their families")
    v.add_argument("--json", action="store_true")
    pl = sub.add_parser("plan", help="lay out a ROLL actor_infer (or plain) config as SGLang engines")
    pl.add_argument(
        "config", help="ROLL's YAML, or JSON/YAML with strategy_config, device_mapping, num_gpus_per_worker"
    )
    pl.add_argument("--json", action="store_true")
    pl.add_argument("--num-gpus-per-node", type=int, default=None, help="override the config's value (default 8)")
    pl.add_argument("--port-base", type=int, default=30000, help="first port of the per-engine port blocks")
    ev = sub.add_parser("env", help="the env policy's plan for one worker launched from this environment")
    ev.add_argument("--worker-name", default=None, help="the worker's name (its private cache slot)")
    ev.add_argument("--server-args", default=None, help="the Engine's server args as a JSON object")
    ev.add_argument("--json", action="store_true")
    pf = sub.add_parser("preflight", help="check this environment before creating an Engine")
    pf.add_argument("--server-args", default=None, help="the Engine's server args as a JSON object")
    pf.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["smoke"]:  # the smoke command has its own parser (python -m ... smoke --help)
        from .smoke import main as smoke_main

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        return smoke_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    command = args.command or "doctor"
    handlers = {"doctor": _doctor, "versions": _versions, "env": _env, "plan": _plan, "preflight": _preflight}
    try:
        return handlers[command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the doctor reports, it does not crash with a traceback
        logging.getLogger(__name__).debug("command failed", exc_info=True)
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return doctor.EXIT_ERROR
