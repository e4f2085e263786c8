"""A child whose launcher dies before SGLang's entry point runs exits instead of lingering.

SGLang's children set their parent-death signal in their entry point's first line, seconds after
the spawn (the target is unpickled and SGLang imported first). The CI found the gap: a scenario
killed a launching server, the detokenizer it was spawning outlived everything and held the
test's output pipes. These tests use the real ``child_entry`` and ``multiprocessing`` spawn; the
launcher is a separate interpreter that the test SIGKILLs while its child waits in a hook."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from helpers import child_env

MODULE = """
import logging, os, time

def wait_for_go():  # a child hook: holds the child before its entry point until told to go
    logging.getLogger().addHandler(logging.StreamHandler())  # the log to stderr, as a user might
    go = os.path.join(os.environ["ORPHAN_DIR"], "go")
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)

def entry_point(path):  # stands in for SGLang's scheduler entry point
    with open(path, "w") as fh:
        fh.write(str(os.getpid()))
"""

LAUNCHER = """
import functools, multiprocessing, os, sys, time
import orphan_mod
from sglang_roll_compat import childhooks

d = os.environ["ORPHAN_DIR"]
spec = childhooks.ChildSpec(launch_id="orphan-test", owner_pid=os.getpid(), state_dir=d,
                            hooks=("orphan_mod:wait_for_go",))
target = functools.partial(childhooks.child_entry, "scheduler", spec,
                           functools.partial(orphan_mod.entry_point, os.path.join(d, "ran")))
child = multiprocessing.get_context("spawn").Process(target=target)
child.start()
print(child.pid, flush=True)
child.join()
print("joined", child.exitcode, flush=True)
"""


def _launch(tmp_path: Path) -> tuple[subprocess.Popen[str], int, Path]:
    (tmp_path / "orphan_mod.py").write_text(textwrap.dedent(MODULE))
    env = child_env([tmp_path], env={"ORPHAN_DIR": str(tmp_path)})
    err = tmp_path / "launcher.err"
    with err.open("w") as err_file:
        launcher = subprocess.Popen(
            [sys.executable, "-P", "-c", LAUNCHER],
            env=env,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            start_new_session=True,
        )
    assert launcher.stdout is not None
    line = launcher.stdout.readline()
    assert line.strip().isdigit(), f"launcher gave {line!r}\n{err.read_text()[-3000:]}"
    return launcher, int(line), err


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _cleanup(launcher: subprocess.Popen[str]) -> None:
    try:
        os.killpg(launcher.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    launcher.wait(timeout=10)


@pytest.mark.timeout(120)
def test_a_child_whose_launcher_died_exits_before_the_entry_point(tmp_path: Path) -> None:
    launcher, child, err = _launch(tmp_path)
    try:
        launcher.kill()  # the launcher dies while its child waits in the hook
        launcher.wait(timeout=10)
        (tmp_path / "go").touch()
        assert _wait_gone(child, 30), "the orphaned child is still running"
        assert not (tmp_path / "ran").exists(), "the entry point ran in an orphaned child"
        assert "the process that started it" in err.read_text()  # said why, on the child's stderr
    finally:
        _cleanup(launcher)
        if not _wait_gone(child, 0):
            os.kill(child, signal.SIGKILL)


@pytest.mark.timeout(120)
def test_control_with_its_launcher_alive_the_child_runs_the_entry_point(tmp_path: Path) -> None:
    launcher, child, _ = _launch(tmp_path)
    try:
        (tmp_path / "go").touch()
        assert launcher.stdout is not None
        assert launcher.stdout.readline().split() == ["joined", "0"]
        assert (tmp_path / "ran").read_text() == str(child)
    finally:
        _cleanup(launcher)
