"""What a patch family is, and the patch list every family builds from its facts.

A family folder (``v046post4/``, ``v052/`` …) holds only what differs for its releases, as a
:class:`Family` record; the wrappers themselves live once, in ``launch``, ``mpproxy`` and
``signals``. :func:`build_patches` turns a family's facts into its patch list, with "not needed"
entries where that release already does the safe thing, so ``status()`` says so instead of
patching blindly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import launch, mpproxy, signals
from .envpolicy import EnvFacts
from .patching import Patch

ENGINE = "sglang.srt.entrypoints.engine"
TOKENIZER_MANAGER = "sglang.srt.managers.tokenizer_manager"
WATCHDOG_MODULE = "sglang.srt.utils.watchdog"
MEMORY_SAVER_MODULE = "sglang.srt.utils.torch_memory_saver_adapter"
OLD_MEMORY_SAVER_MODULE = "sglang.srt.torch_memory_saver_adapter"  # up to 0.5.3


@dataclass(frozen=True)
class Family:
    name: str
    summary: str
    env: EnvFacts
    # where the launch function lives: "module" (engine._launch_subprocesses, <= 0.5.9) or
    # "classmethod" (Engine._launch_subprocesses, >= 0.5.10)
    launch: str = "module"
    # upstream guards signal.signal with a main-thread check itself (0.5.10+, PR #18752)
    signals_guarded: bool = False
    # upstream has sglang.srt.utils.watchdog.SubprocessWatchdog, which SIGQUITs its own process
    subprocess_watchdog: bool = False
    # 0.4.6-0.4.9 install a SIGCHLD handler that reaps any child of the caller
    sigchld_handler: bool = False
    # importing engine.py replaces threading._register_atexit with a no-op (up to 0.5.13)
    register_atexit_noop: bool = True
    # where _TorchMemorySaverAdapterReal lives (sglang.srt.utils.* from 0.5.4)
    memory_saver_module: str = MEMORY_SAVER_MODULE
    notes: tuple[str, ...] = field(default=())

    @property
    def patches(self) -> tuple[Patch, ...]:
        return build_patches(self)


def build_patches(family: Family) -> tuple[Patch, ...]:
    launch_attr = "Engine._launch_subprocesses" if family.launch == "classmethod" else "_launch_subprocesses"
    patches = [
        Patch(
            "engine_init",
            ENGINE,
            "Engine.__init__",
            "opens the launch context before ServerArgs is built (env snapshot, worker identity)",
            wrapper=launch.engine_init,
        ),
        Patch(
            "launch_subprocesses",
            ENGINE,
            launch_attr,
            "start method restored after launch; a failing child raises EngineLaunchError in the caller",
            wrapper=launch.launch_subprocesses,
        ),
        Patch(
            "set_envs_and_config",
            ENGINE,
            "_set_envs_and_config",
            "upstream runs, then the caller's SIGQUIT/SIGCHLD handlers come back and the env policy applies",
            wrapper=launch.set_envs_and_config(family.env),
        ),
        Patch(
            "child_processes",
            ENGINE,
            "mp",
            "every child SGLang starts runs behind child_entry (env, hooks, no SIGQUIT to the owner)",
            factory=mpproxy.make_proxy,
        ),
        Patch(
            "tokenizer_signal_handlers",
            TOKENIZER_MANAGER,
            "TokenizerManager.auto_create_handle_loop",
            "at the first request SGLang takes the caller's SIGTERM/SIGQUIT; the caller's handlers come back",
            wrapper=launch.tokenizer_handlers,
        ),
        Patch(
            "subprocess_env_lock",
            family.memory_saver_module,
            "_TorchMemorySaverAdapterReal.configure_subprocess",
            "LD_PRELOAD edited, child started and env restored under one process-wide lock (two engines, two threads)",
            wrapper=launch.serialize_subprocess_env,
        ),
        Patch(
            "engine_shutdown",
            ENGINE,
            "Engine.shutdown",
            "closes the launch context (watchdog, state directory) after upstream's shutdown",
            wrapper=launch.engine_shutdown,
        ),
    ]
    if family.signals_guarded:
        patches.append(
            Patch(
                "signal_off_main_thread",
                ENGINE,
                "signal",
                "signal.signal off the main thread",
                not_needed="this SGLang skips signal.signal off the main thread itself (PR #18752)",
            )
        )
    else:
        patches.append(
            Patch(
                "signal_off_main_thread",
                ENGINE,
                "signal",
                "signal.signal is skipped off the main thread instead of raising ValueError",
                factory=signals.make_proxy,
            )
        )
    if family.subprocess_watchdog:
        patches.append(
            Patch(
                "subprocess_watchdog",
                WATCHDOG_MODULE,
                "SubprocessWatchdog.start",
                "SGLang's watchdog SIGQUITs the caller when a child dies; ours reports instead",
                wrapper=launch.skip_upstream_subprocess_watchdog,
            )
        )
    else:
        patches.append(
            Patch(
                "subprocess_watchdog",
                WATCHDOG_MODULE,
                "SubprocessWatchdog.start",
                "",
                not_needed="this SGLang has no SubprocessWatchdog",
            )
        )
    if family.env.triton_cache_manager:
        patches.append(
            Patch(
                "triton_cache_manager",
                ENGINE,
                "_set_envs_and_config",
                "",
                not_needed="upstream's Triton cache-manager workaround (triton-lang/triton#4295) "
                "stays in force when tp*dp > 1; the env policy leaves TRITON_CACHE_MANAGER alone",
            )
        )
    return tuple(patches)
