"""ROLL's HTTP mode: SGLang's ``launch_server`` in ROLL's server child, with the shim armed.

ROLL starts ``SglangHttpEngine.launch_server(sglang_config)`` in a ``multiprocessing`` child,
which imports SGLang's ``http_server.launch_server`` directly: nothing of ROLL's patch folder
reaches that child or the scheduler children it starts. There,
``from sglang_roll_compat.roll import launch_server`` takes the place of upstream's (same call,
``launch_server(server_args)``; a plain dict of server args works too): the version gate, the
launch patches, the ROLL env profile and the child hooks (``hooks=`` plus any registered in the
child) reach every scheduler and DP-controller child of the server, as in the in-process mode.
It is the same code path as ``python -m sglang_roll_compat.serve`` (``serve.run_server``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .. import serve
from . import env


def launch_server(server_args: Any, *, hooks: Sequence[str] = (), worker_name: str | None = None) -> None:
    """Run SGLang's HTTP server in this process (blocks until it stops), shim and ROLL profile armed.

    ``server_args``: SGLang's ``ServerArgs`` or a mapping of its fields (ROLL's ``sglang_config``).
    ``hooks``: ``"pkg.module:function"`` child hooks (ROLL's FP8 patch, for one). ``worker_name``:
    the worker slot; by default ROLL's ``WORKER_NAME`` environment variable.
    """
    env.arm()
    if isinstance(server_args, Mapping):
        from sglang.srt.server_args import ServerArgs

        server_args = ServerArgs(**server_args)
    serve.run_server(server_args, hooks, worker_name)
