"""What the subprocess drivers of the reliability and vendoring suites compare: each patch
target's current object against the original SGLang object, captured by a post-import hook that
fires before any patch lands. Imported inside the drivers' fresh interpreters (``tests/`` is on
their ``PYTHONPATH``)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

WATCHED_MODULES = (
    "sglang.srt.entrypoints.engine",
    "sglang.srt.utils.watchdog",
    "sglang.srt.managers.data_parallel_controller",
    "sglang.srt.managers.tokenizer_manager",
    "sglang.srt.torch_memory_saver_adapter",  # up to 0.5.2
    "sglang.srt.utils.torch_memory_saver_adapter",  # from 0.5.4
)


def watch_originals() -> dict[str, Any]:
    """Register the snapshot hooks (call before the package is imported); returns the mapping
    module name -> (module vars, {class name: class vars}) that they fill."""
    import wrapt

    snapshots: dict[str, Any] = {}

    def snapshot(module: Any) -> None:
        classes = {k: dict(vars(v)) for k, v in list(vars(module).items()) if isinstance(v, type)}
        snapshots[module.__name__] = (dict(vars(module)), classes)

    for name in WATCHED_MODULES:
        wrapt.register_post_import_hook(snapshot, name)
    return snapshots


def targets(patches: Any, snapshots: dict[str, Any]) -> Iterator[tuple[Any, Any, Any]]:
    """``(patch, current object, original object)`` for every needed patch whose module is loaded."""
    for p in patches:
        if p.not_needed or p.module not in sys.modules:
            continue
        *path, attr = p.attribute.split(".")
        parent: Any = sys.modules[p.module]
        for part in path:
            parent = vars(parent)[part]
        module_vars, classes = snapshots[p.module]
        yield p, vars(parent)[attr], classes[path[0]][attr] if path else module_vars[attr]
