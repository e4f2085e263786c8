"""Patch family for SGLang 0.5.10 … 0.5.13.post1.

What differs from ``v054`` (0.5.4.post2 … 0.5.9):

* the launch function is the classmethod ``Engine._launch_subprocesses`` (the module function is
  gone); it returns ``(tokenizer_manager, template_manager, port_args, scheduler_init_result,
  subprocess_watchdog)``;
* ``_set_envs_and_config`` installs its SIGQUIT handler only on the main thread (PR #18752), so
  the shim's signal proxy is not needed;
* ``sglang.srt.utils.watchdog.SubprocessWatchdog`` exists and is started at the end of a
  successful launch; it SIGQUITs its own process (the caller) when a child dies, so the shim
  does not start it while its own watchdog covers the launch.

Importing ``engine.py`` still replaces ``threading._register_atexit`` with a no-op (undone by the
shim). Env: as 0.5.5+ (NCCL_* respect the user unless enable_symm_mem/enable_nccl_nvls),
CUDA_DEVICE_MAX_CONNECTIONS=8, CUDA_MODULE_LOADING=AUTO, TRTLLM_ENABLE_PDL=1 unless 0.
"""

from ..envpolicy import EnvFacts
from ..family import Family

FAMILY = Family(
    name="v0510",
    summary="SGLang 0.5.10-0.5.13.post1: classmethod launch, guarded SIGQUIT, SubprocessWatchdog",
    env=EnvFacts(
        cuda_device_max_connections="8", upstream_sets=frozenset({"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"})
    ),
    launch="classmethod",
    signals_guarded=True,
    subprocess_watchdog=True,
    register_atexit_noop=True,
)
