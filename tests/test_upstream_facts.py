"""The facts about the installed SGLang that the selected patch family relies on.

Each assertion reads the real upstream module of this session's pinned version, so an upstream
change that moves a patch point fails here, loudly, rather than in a user's training job.
"""

from __future__ import annotations

import importlib
import inspect
import multiprocessing
import signal
import threading

import pytest

import sglang_roll_compat
from sglang_roll_compat import FAMILY

pytestmark = pytest.mark.sglang


@pytest.fixture(scope="module")
def engine_mod():  # type: ignore[no-untyped-def]
    return importlib.import_module("sglang.srt.entrypoints.engine")


def _unwrapped(obj):  # type: ignore[no-untyped-def]
    return getattr(obj, "__wrapped__", obj)


def test_set_envs_and_config_is_a_module_function_of_server_args(engine_mod) -> None:  # type: ignore[no-untyped-def]
    func = inspect.unwrap(engine_mod._set_envs_and_config)
    assert list(inspect.signature(func).parameters) == ["server_args"]


def test_the_launch_function_is_where_the_family_says(engine_mod) -> None:  # type: ignore[no-untyped-def]
    in_module = "_launch_subprocesses" in vars(engine_mod)
    in_class = "_launch_subprocesses" in vars(engine_mod.Engine)
    if FAMILY.launch == "module":
        assert in_module and not in_class
        params = list(inspect.signature(_unwrapped(engine_mod._launch_subprocesses)).parameters)
        assert params[0] == "server_args"
    else:
        assert in_class and not in_module
        assert isinstance(_unwrapped(vars(engine_mod.Engine)["_launch_subprocesses"]), classmethod)


def test_children_and_ready_pipes_are_created_through_the_mp_global(engine_mod) -> None:  # type: ignore[no-untyped-def]
    assert _unwrapped(vars(engine_mod)["mp"]) is multiprocessing
    source = inspect.getsource(engine_mod)
    assert "mp.Process(" in source and "mp.Pipe(" in source
    dpc = importlib.import_module("sglang.srt.managers.data_parallel_controller")
    assert vars(dpc)["mp"] is multiprocessing
    assert "mp.Process(" in inspect.getsource(dpc)


def test_child_entry_points_have_the_names_the_role_table_knows(engine_mod) -> None:  # type: ignore[no-untyped-def]
    from sglang_roll_compat.mpproxy import role_of

    scheduler = importlib.import_module("sglang.srt.managers.scheduler").run_scheduler_process
    detok = importlib.import_module("sglang.srt.managers.detokenizer_manager").run_detokenizer_process
    dpc = importlib.import_module("sglang.srt.managers.data_parallel_controller").run_data_parallel_controller_process
    assert (role_of(scheduler), role_of(detok), role_of(dpc)) == ("scheduler", "detokenizer", "dp_controller")
    pipe_params = [p for p in inspect.signature(scheduler).parameters if "pipe" in p]
    assert pipe_params, "run_scheduler_process reports readiness through a pipe"


def test_signal_handling_matches_the_family(engine_mod) -> None:  # type: ignore[no-untyped-def]
    assert _unwrapped(vars(engine_mod)["signal"]) is signal
    source = inspect.getsource(inspect.unwrap(engine_mod._set_envs_and_config))
    assert "signal.SIGQUIT" in source
    guarded = "threading.current_thread() is threading.main_thread()" in source
    assert guarded == FAMILY.signals_guarded
    assert ("signal.SIGCHLD" in source) == FAMILY.sigchld_handler
    assert 'set_start_method("spawn", force=True)' in source


def test_subprocess_watchdog_presence_matches_the_family() -> None:
    try:
        module = importlib.import_module("sglang.srt.utils.watchdog")
    except ImportError:
        present = False
    else:
        present = hasattr(module, "SubprocessWatchdog")
    assert present == FAMILY.subprocess_watchdog


def test_register_atexit_noop_matches_the_family(engine_mod) -> None:  # type: ignore[no-untyped-def]
    source = inspect.getsource(engine_mod)
    assert ('setattr(threading, "_register_atexit"' in source) == FAMILY.register_atexit_noop
    # and the import side effect is undone: Python's own function is back
    assert getattr(threading._register_atexit, "__module__", None) == "threading"


def test_engine_init_takes_keyword_server_args_and_shutdown_takes_nothing(engine_mod) -> None:  # type: ignore[no-untyped-def]
    init = inspect.signature(_unwrapped(vars(engine_mod.Engine)["__init__"]))
    assert [p.kind for p in list(init.parameters.values())[1:]] == [inspect.Parameter.VAR_KEYWORD]
    shutdown = inspect.signature(_unwrapped(vars(engine_mod.Engine)["shutdown"]))
    assert list(shutdown.parameters) == ["self"]


def test_env_facts_match_upstream_source(engine_mod) -> None:  # type: ignore[no-untyped-def]
    source = inspect.getsource(inspect.unwrap(engine_mod._set_envs_and_config))
    facts = FAMILY.env
    assert f'os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] = "{facts.cuda_device_max_connections}"' in source
    assert ("TRTLLM_ENABLE_PDL" in source) == facts.trtllm_pdl
    assert ("enable_symm_mem" in source) == facts.symm_mem_args
    assert ("maybe_set_triton_cache_manager" in source) == facts.triton_cache_manager


def test_every_needed_patch_is_applied_once_the_engine_is_imported(engine_mod) -> None:  # type: ignore[no-untyped-def]
    states = {s.name: s.state for s in sglang_roll_compat.status()}
    for p in FAMILY.patches:
        expected = "not needed" if p.not_needed else "applied"
        assert states[p.name] == expected, (p.name, states[p.name])


def test_schedulers_start_inside_the_memory_saver_env_edit(engine_mod) -> None:  # type: ignore[no-untyped-def]
    """The subprocess_env_lock patch point: upstream wraps each scheduler's start in
    ``memory_saver_adapter.configure_subprocess()``, defined where the family says."""
    assert "memory_saver_adapter.configure_subprocess()" in inspect.getsource(engine_mod)
    adapter = importlib.import_module(FAMILY.memory_saver_module)
    assert "configure_subprocess" in vars(adapter._TorchMemorySaverAdapterReal)
