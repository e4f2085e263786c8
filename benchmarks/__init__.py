"""Benchmarks for sglang_roll_compat (``nox -s bench``): what the shim costs, as ratios measured
side by side in one run. Not a test suite: a missed target is reported, never raised.

``python -m benchmarks.run --help`` (inside the bench venv) lists the options; ``run.py`` is the
entry point and each other module measures one thing:

* ``import_cost``: whole-process import timings, metadata lookups, heavy modules (target 1);
* ``patch_cost``: ``unpatch()``/``patch()`` once SGLang's engine module is loaded (target 2);
* ``facade_overhead``: each facade method against the upstream call it wraps (target 3);
* ``envpolicy_cost`` and ``doctor_cost``: the env policy and the doctor (target 4);
* ``_stats`` (measuring helpers) and ``report`` (machine facts, tables, JSON, Markdown).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def use_installed_package() -> None:
    """Take the source tree off ``sys.path``, so ``import sglang_roll_compat`` measures the copy
    that pip installed into the venv (byte-compiled, as users get it), not the checkout.

    ``python -m benchmarks.run`` puts the working directory first on ``sys.path``; this package's
    own submodules are found through ``benchmarks.__path__`` and keep working without it.
    """
    if "sglang_roll_compat" in sys.modules:
        raise RuntimeError("sglang_roll_compat was imported before the benchmarks chose which copy to measure")
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
