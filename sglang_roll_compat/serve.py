"""``python -m sglang_roll_compat.serve SPEC.json``: SGLang's HTTP server with the shim armed.

The server-mode facade (:class:`~sglang_roll_compat.server.ServerEngine`) starts this module as
a subprocess. It does what ``python -m sglang.launch_server`` does — build ``ServerArgs`` and
call SGLang's own ``http_server.launch_server`` — after importing this package (so the launch
patches, the env policy and the child hooks reach the server's scheduler children too). The
spec file holds ``{"server_args": {...}, "worker_name": ..., "hooks": [...]}``: server arguments
travel as JSON and become ``ServerArgs(**server_args)`` directly, so no flag is lost in a
round trip through the command line. If a child of the server dies after launch, the server
process exits (status 70) instead of serving a dead engine.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)

EXIT_CHILD_DIED = 70


def _exit_on_child_death(message: str) -> None:
    logger.error("an SGLang child of this server died; ending the server: %s", message)
    logging.shutdown()
    os._exit(EXIT_CHILD_DIED)


def run_server(server_args: Any, hooks: Sequence[str] = (), worker_name: str | None = None) -> None:
    """SGLang's own ``http_server.launch_server(server_args)`` in this process, with the shim
    armed: the launch patches, the env policy and ``hooks`` (plus those already registered here)
    reach the server's children; a child that dies after launch ends this process (status 70).
    This process is SGLang's server, so SGLang's own signal handlers stay."""
    importlib.import_module(__package__ or "")  # the package: gate and patches (a no-op if done)
    from . import childhooks, launch, signals

    signals.contain_tokenizer_handlers = False  # this process is SGLang's server: its handlers stay
    for hook in hooks:
        childhooks.add_child_hook(hook)
    launch.add_death_hook(_exit_on_child_death)
    from sglang.srt.entrypoints.http_server import launch_server

    with launch.launch_options(worker_name=worker_name):
        launch_server(server_args)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sglang_roll_compat.serve SPEC.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        spec = json.load(fh)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    importlib.import_module(__package__ or "")  # run as "python -m <package>.serve"
    from sglang.srt.server_args import ServerArgs

    server_args = ServerArgs(**spec["server_args"])
    run_server(server_args, spec.get("hooks", []), spec.get("worker_name"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
