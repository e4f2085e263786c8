"""Target 4a: evaluating the env policy (``envpolicy.plan``), as the launch path calls it.

Realistic arguments: the real ``ServerArgs`` of the fake engine (tp_size etc. as upstream built
them), a copy of this process's environment with a trainer's usual variables set, the worker
derived from them, and the installed family's ``EnvFacts``. ``plan`` is pure (no directory is
created), so it is timed as is; ``worker_from_args + plan`` (what the launch wrapper runs) is
reported beside it.
"""

from __future__ import annotations

import os
from typing import Any

from ._stats import INFO, Measurement, Section, Summary, Target, side_by_side

LIMIT_S = 100e-6  # plan() <= 100 µs

TRAINER_ENV = {
    "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7",
    "RANK": "0",
    "WORLD_SIZE": "8",
    "NCCL_CUMEM_ENABLE": "0",
    "CUDA_DEVICE_MAX_CONNECTIONS": "1",
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",
}


def run(server_args: Any, *, repeat: int, budget_s: float, seed: int = 0) -> Section:
    import sglang_roll_compat
    from sglang_roll_compat import envpolicy

    facts = sglang_roll_compat.FAMILY.env
    user_env = {**os.environ, **TRAINER_ENV}
    environ = {**user_env, "CUDA_DEVICE_MAX_CONNECTIONS": facts.cuda_device_max_connections}  # as upstream set it
    worker = envpolicy.worker_from_args(server_args, "actor_infer-0", environ, facts=facts)

    def plan_only() -> list[Any]:
        return envpolicy.plan(server_args, environ, worker, user_env=user_env, facts=facts)

    def launch_path() -> object:
        w = envpolicy.worker_from_args(server_args, "actor_infer-0", environ, facts=facts)
        return envpolicy.plan(server_args, environ, w, user_env=user_env, facts=facts)

    changes = plan_only()
    samples = side_by_side(
        {"plan": plan_only, "worker_from_args + plan": launch_path}, repeat=repeat, budget_s=budget_s, seed=seed
    )
    section = Section("envpolicy", "4a. Env policy evaluation")
    plan_s = Summary.of(samples["plan"])
    both_s = Summary.of(samples["worker_from_args + plan"])
    section.measurements += [
        Measurement("envpolicy.plan(ServerArgs, environ, worker)", plan_s, "us", f"{len(changes)} changes"),
        Measurement("worker_from_args + plan (the launch path)", both_s, "us"),
    ]
    section.targets += [
        Target.at_most("env policy: plan() per call", plan_s.median, LIMIT_S, "us", "<= 100 µs", plan_s),
        Target("env policy: worker_from_args + plan", both_s.median, None, "us", "reported, no target", INFO, both_s),
    ]
    section.extra = {"environ_size": len(environ), "worker_slot": worker.slot}
    return section
