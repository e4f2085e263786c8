"""ROLL's HTTP-mode server child, as ROLL writes it (``SglangHttpEngine.launch_server``), with
the one import changed: ``sglang_roll_compat.roll.launch_server`` instead of SGLang's."""

from __future__ import annotations

from typing import Any


def launch_server(sglang_config: dict[str, Any], hooks: list[str]) -> None:
    from sglang_roll_compat.roll import launch_server as roll_launch_server

    roll_launch_server(sglang_config, hooks=hooks)
