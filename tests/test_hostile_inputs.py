"""Bad input, on purpose and in bulk: every input gets a result or the clear error it should,
never another exception and never a hang. Counts go to the figures printed at the end of the run.

* version strings: every SGLang release on PyPI (tests/data/sglang_releases.txt), their
  pre/post/dev/local variants, padding, unicode and 10 kB garbage -> a family or
  ``UnsupportedVersionError``; the accepted releases are exactly the support table;
* worker names and cache roots -> a private (0700, ours) directory inside the cache root, or
  ``WorkspaceError``; planted links are refused, loose modes repaired (loudly), foreign owners refused;
* odd values already in the environment -> ``envpolicy.plan`` reports and replaces them, never raises;
* server arguments of the wrong type, unknown names, out-of-range values -> ``ServerArgsError``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _figures
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from sglang_roll_compat import envpolicy, serverargs, versions, workspace
from sglang_roll_compat._support_table import SUPPORTED_VERSIONS
from sglang_roll_compat.errors import ServerArgsError, UnsupportedVersionError

DATA = Path(__file__).parent / "data"
HANG_S = 30.0  # one call taking longer than this counts as a hang (2 s tripped on a loaded 2-core CI box)
SETTINGS = settings(
    # 200 per property; CI's per-family sessions (ci-sglang-<v>) ask for fewer
    max_examples=int(os.environ.get("SGLANG_ROLL_COMPAT_EXAMPLES", "200")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


class Tally:
    """Runs calls, sorting each outcome into ok / clear error / crash-or-hang."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.tried = self.errors = self.crashes = 0
        self.crash_samples: list[str] = []

    def run(
        self, func: Callable[..., Any], *args: Any, expect: type[BaseException] | tuple[type[BaseException], ...] = ()
    ) -> tuple[str, Any]:
        self.tried += 1
        started = time.monotonic()
        try:
            value = func(*args)
        except expect as exc:
            outcome: tuple[str, Any] = ("error", exc)
        except Exception as exc:
            outcome = ("crash", exc)
        else:
            outcome = ("ok", value)
        if time.monotonic() - started > HANG_S:
            outcome = ("crash", TimeoutError(f"{func.__name__} took {time.monotonic() - started:.1f}s"))
        if outcome[0] == "error":
            self.errors += 1
        elif outcome[0] == "crash":
            self.crashes += 1
            if len(self.crash_samples) < 5:
                self.crash_samples.append(f"{func.__name__}{tuple(_short(a) for a in args)!r}: {outcome[1]!r}")
        return outcome

    def publish(self) -> None:
        _figures.record(self.suite, tried=self.tried, errors=self.errors, crashes=self.crashes)

    def assert_no_crash(self) -> None:
        assert self.crashes == 0, f"{self.crashes} crash(es)/hang(s) in {self.suite}: {self.crash_samples}"


def _short(value: Any) -> Any:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:60]}...({len(text)} chars)"


@contextmanager
def tallying(suite: str) -> Iterator[Tally]:
    """Counts one test's calls into ``suite``'s figures; fails the test on any crash or hang."""
    t = Tally(suite)
    try:
        yield t
    finally:
        t.publish()
    t.assert_no_crash()


# -- version strings ---------------------------------------------------------------------------
def pypi_releases() -> list[str]:
    lines = (DATA / "sglang_releases.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


SUPPORTED = {Version(v): family for v, family in SUPPORTED_VERSIONS.items()}


def _check_version_outcome(text: Any, outcome: tuple[str, Any]) -> None:
    """A family only for a string that is a supported release; the error is the clear one."""
    kind, value = outcome
    if kind == "ok":
        parsed = Version(str(text))  # accepted: it must be a valid version...
        assert SUPPORTED.get(parsed) == value, (text, value)  # ...of a supported release, with its family
        assert str(text) == str(text).strip()
    elif kind == "error":
        assert isinstance(value, NotImplementedError)
        message = str(value)
        assert "Supported SGLang versions:" in message and "pip install 'sglang==" in message
        assert len(message) < 2000, "a hostile string is not repeated whole"
        assert value.supported == versions.supported_versions()


def test_every_pypi_release_is_accepted_exactly_when_it_is_in_the_support_table() -> None:
    with tallying("version strings") as tally:
        releases = pypi_releases()
        assert releases[0].startswith("0.1.") and releases[-1] == "0.5.23" and len(releases) == len(set(releases)) > 140
        accepted = {}
        for release in releases:
            outcome = tally.run(versions.family_for, release, expect=UnsupportedVersionError)
            _check_version_outcome(release, outcome)
            if outcome[0] == "ok":
                accepted[release] = outcome[1]
        assert accepted == SUPPORTED_VERSIONS  # every table entry is a real release, and nothing else passes


VARIANT_SUFFIXES = [
    "rc1",
    "a0",
    "b2",
    ".dev0",
    ".post99",
    "+local",
    "+cu124.torch2",
    ".post1.dev1",
    "rc1.post1",
    ".0.1",
]
PADDINGS = [" {}", "{} ", "\t{}", "{}\n", "\n{}", "{}\x00", "\u200b{}", "{}\u00a0", "=={}", "sglang-{}", "{}.*"]


def test_variants_of_every_release_are_refused() -> None:
    with tallying("version strings") as tally:
        for release in pypi_releases():
            for variant in [release + s for s in VARIANT_SUFFIXES] + [p.format(release) for p in PADDINGS]:
                outcome = tally.run(versions.family_for, variant, expect=UnsupportedVersionError)
                assert outcome[0] == "error", f"{variant!r} is not a tested release but got {outcome[1]!r}"
                _check_version_outcome(variant, outcome)


def test_equivalent_spellings_of_a_supported_release_get_its_family() -> None:
    with tallying("version strings") as tally:
        # PEP 440 normalisation: these ARE the supported releases (pip would install the same wheel)
        for release, family in SUPPORTED_VERSIONS.items():
            for spelling in (f"v{release}", f"V{release}", release.upper(), release.replace(".post", "-post")):
                outcome = tally.run(versions.family_for, spelling, expect=UnsupportedVersionError)
                assert outcome == ("ok", family), (spelling, outcome)


GARBAGE = [
    "",
    " ",
    "\t\n",
    "latest",
    "None",
    "0",
    "0.5",
    "٠.٥.٢",  # Arabic-Indic digits
    "０.５.２",  # fullwidth digits
    "0.5.2\u0301",
    "\ud800",
    "\x00",
    "0.5.2" * 2000,  # 10 kB
    "9" * 10_000,
    "0." + "1." * 5000 + "2",
    "1!0.5.2",
    "0.5.2+" + "a" * 10_000,
    "\U0001f600",
]
PEP440ISH = (
    r"\A(v|[0-9]!)?[0-9]{1,3}(\.[0-9]{1,3}){0,4}((a|b|rc)[0-9]{1,2})?"
    r"(\.post[0-9]{1,2})?(\.dev[0-9]{1,2})?(\+[a-z0-9.]{1,8})?\Z"
)


def test_garbage_and_generated_version_strings() -> None:
    with tallying("version strings") as tally:
        for text in [*GARBAGE, None, 52, 0.52, b"0.5.2"]:
            outcome = tally.run(versions.family_for, text, expect=UnsupportedVersionError)
            assert outcome[0] == "error", (text, outcome)
            _check_version_outcome(text, outcome)

        @SETTINGS
        @given(
            st.one_of(
                st.text(max_size=60),
                st.from_regex(PEP440ISH),
                st.sampled_from(sorted(SUPPORTED_VERSIONS)).flatmap(
                    lambda v: st.tuples(st.just(v), st.text(max_size=8)).map(lambda t: t[0] + t[1])
                ),
            )
        )
        def check(text: str) -> None:
            _check_version_outcome(text, tally.run(versions.family_for, text, expect=UnsupportedVersionError))

        check()
        assert tally.errors > 0


# -- worker names and cache roots ----------------------------------------------------------------
SAFE_SLOT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]|[A-Za-z0-9]")
HOSTILE_NAMES = [
    "..",
    ".",
    "../../../etc",
    "/etc/passwd",
    "/",
    "//",
    "a/../../b",
    "a\x00b",
    "\x00",
    "line\nbreak",
    "\r\n",
    "x" * 10_000,
    "é" * 300,
    "ünï/cødé",
    "日本語",
    "\U0001f600",
    "-rf",
    "~root",
    "$HOME",
    "a\\b",
    "con",
    " ",
    "",
    None,
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _assert_private_inside(path: Path, base: Path) -> None:
    real_base = base.resolve()
    assert path.resolve().is_relative_to(real_base), (path, base)
    current = path
    while current not in (base, current.parent):  # every level we made: a plain 0700 directory of ours
        st_ = os.lstat(current)
        assert stat.S_ISDIR(st_.st_mode), current
        assert stat.S_IMODE(st_.st_mode) == 0o700, (current, oct(st_.st_mode))
        assert st_.st_uid == os.geteuid()
        current = current.parent


def test_hostile_worker_names_land_in_private_dirs_inside_the_base(tmp_path: Path) -> None:
    with tallying("worker names") as tally:
        base = tmp_path / "cache"
        env = {workspace.CACHE_DIR_ENV: str(base)}
        named_slots: dict[str, Any] = {}

        def one(name: Any) -> None:
            outcome = tally.run(workspace.worker_slot, name, ("3",), {})
            assert outcome[0] == "ok", outcome
            slot = outcome[1]
            assert SAFE_SLOT.fullmatch(slot) and len(slot) <= 100, (name, slot)
            if slot.startswith("w-"):  # two different names never share a directory
                assert named_slots.setdefault(slot, name) == name, (slot, named_slots[slot], name)
            else:
                assert slot == "gpu-3", (name, slot)  # nothing usable in the name: the GPU decides
            outcome = tally.run(workspace.create_worker_dirs, slot, env, expect=workspace.WorkspaceError)
            assert outcome[0] == "ok", outcome
            for path in outcome[1].values():
                _assert_private_inside(path, base)
            # the raw name as a path component: refused, or (when it is already safe) inside the base
            raw = tally.run(
                workspace.ensure_private_dir, base, ["raw", name], expect=(workspace.WorkspaceError, TypeError)
            )
            if raw[0] == "ok":
                assert SAFE_SLOT.fullmatch(name) and name not in (".", "..")
                _assert_private_inside(raw[1], base)
            else:
                assert isinstance(raw[1], workspace.WorkspaceError) or name is None

        for name in HOSTILE_NAMES:
            one(name)

        @SETTINGS
        @given(
            st.one_of(
                st.text(max_size=100),
                st.text(alphabet=st.sampled_from(list("./\\\x00\n\r\t -_~$aZ9üé\u202e")), max_size=40),
                st.integers(min_value=60, max_value=5000).map(lambda n: "n" * n),
            )
        )
        def generated(name: str) -> None:
            one(name)

        generated()
        assert set(os.listdir(tmp_path)) == {"cache"}, "nothing was created beside the base"


def test_hostile_cache_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with tallying("cache roots") as tally:
        home = tmp_path / "home"
        home.mkdir()
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.chdir(tmp_path)
        t = str(tmp_path)
        explicit = [
            "relative",
            "./c",
            "../c",
            "~/c",
            f"{t}/nul\x00byte",
            f"{t}/new\nline",
            f"{t}/ünï cødé",
            f"{t}/dots/../inside",
            f"{t}/" + "l" * 200,
            f"{t}/" + "/".join(["d" * 250] * 20),  # longer than PATH_MAX
        ]
        xdg = ["relative", "", f"{t}/nul\x00", "./x", "~"]
        for value in explicit:
            outcome = tally.run(workspace.cache_root, {workspace.CACHE_DIR_ENV: value}, expect=workspace.WorkspaceError)
            assert outcome[0] in ("ok", "error"), outcome
            if outcome[0] == "error":
                assert not os.path.isabs(value) or "\x00" in value, value
                continue
            root = outcome[1]
            assert root.is_absolute() and "\x00" not in str(root)
            made = tally.run(workspace.create_worker_dirs, "w-x", {workspace.CACHE_DIR_ENV: value}, expect=OSError)
            if made[0] == "error":  # only a path the OS cannot hold
                assert made[1].errno == errno.ENAMETOOLONG, made
                continue
            for path in made[1].values():
                _assert_private_inside(path, root)
        for value in xdg:  # an unusable XDG_CACHE_HOME falls back to ~/.cache, never a relative path
            outcome = tally.run(workspace.cache_root, {"XDG_CACHE_HOME": value}, expect=workspace.WorkspaceError)
            assert outcome == ("ok", home / ".cache" / "sglang_roll_compat"), (value, outcome)
        assert not (tmp_path / "relative").exists() and not (tmp_path / "c").exists() and not (tmp_path / "x").exists()


def test_a_relative_home_never_puts_the_cache_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tallying("cache roots") as tally:
        monkeypatch.chdir(tmp_path)
        for home in ("relative-home", "."):
            monkeypatch.setenv("HOME", home)
            outcome = tally.run(workspace.cache_root, {}, expect=workspace.WorkspaceError)
            if outcome[0] == "ok":
                assert outcome[1].is_absolute(), f"HOME={home!r} gave the relative cache root {outcome[1]}"
        assert list(tmp_path.iterdir()) == []


LEVELS = ["workers", "host", "slot", "triton"]


def _level_path(root: Path, level: str) -> Path:
    parts = ["workers", workspace.host_component(), "w-x", "triton"]
    return root.joinpath(*parts[: LEVELS.index(level) + 1])


PLANTS: dict[str, Callable[[Path, Path], None]] = {
    "symlink to a directory": lambda at, elsewhere: at.symlink_to(elsewhere, target_is_directory=True),
    "symlink to a file": lambda at, elsewhere: at.symlink_to(elsewhere / "file"),
    "dangling symlink": lambda at, elsewhere: at.symlink_to(elsewhere / "missing"),
    "symlink loop": lambda at, elsewhere: at.symlink_to(at),
    "regular file": lambda at, elsewhere: at.write_text("x"),
    "fifo": lambda at, elsewhere: os.mkfifo(at),
}


@pytest.mark.parametrize("level", LEVELS)
def test_anything_planted_at_a_target_is_refused(tmp_path: Path, level: str) -> None:
    with tallying("worker names") as tally:
        for kind, plant in PLANTS.items():
            root = tmp_path / kind.replace(" ", "_") / "cache"
            elsewhere = tmp_path / kind.replace(" ", "_") / "elsewhere"
            elsewhere.mkdir(parents=True)
            (elsewhere / "file").write_text("secret")
            target = _level_path(root, level)
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            for p in [root, *target.parent.relative_to(root).parents]:
                (root / p).chmod(0o700)
            target.parent.chmod(0o700)
            plant(target, elsewhere)
            before = _tree(elsewhere)
            outcome = tally.run(
                workspace.create_worker_dirs,
                "w-x",
                {workspace.CACHE_DIR_ENV: str(root)},
                expect=workspace.WorkspaceError,
            )
            assert outcome[0] == "error", f"{kind} at {level}: {outcome}"
            assert "refusing" in str(outcome[1]) or "not a directory" in str(outcome[1])
            assert _tree(elsewhere) == before, f"{kind} at {level} was followed"


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("mode", [0o777, 0o755, 0o750, 0o701, 0o707])
def test_a_loose_mode_is_repaired_loudly_or_refused(
    tmp_path: Path, level: str, mode: int, caplog: pytest.LogCaptureFixture
) -> None:
    with tallying("worker names") as tally:
        root = tmp_path / "cache"
        env = {workspace.CACHE_DIR_ENV: str(root)}
        workspace.create_worker_dirs("w-x", env)
        target = _level_path(root, level)
        target.chmod(mode)
        # repair=False: a loose directory is an error, not silently used
        parts = list(_level_path(root, "triton").relative_to(root).parts)
        outcome = tally.run(workspace.ensure_private_dir, root, parts, False, expect=workspace.WorkspaceError)
        assert outcome[0] == "error" and "accessible to other users" in str(outcome[1])
        assert stat.S_IMODE(target.stat().st_mode) == mode
        with caplog.at_level(logging.WARNING, logger="sglang_roll_compat.workspace"):
            outcome = tally.run(workspace.create_worker_dirs, "w-x", env, expect=workspace.WorkspaceError)
        assert outcome[0] == "ok"
        assert stat.S_IMODE(target.stat().st_mode) == 0o700
        assert any(str(target) in r.getMessage() and "repaired" in r.getMessage() for r in caplog.records), "not silent"


@pytest.mark.parametrize("level", ["root", *LEVELS])
def test_a_directory_of_another_owner_is_refused_at_every_level(
    tmp_path: Path, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tallying("worker names") as tally:
        root = tmp_path / "cache"
        env = {workspace.CACHE_DIR_ENV: str(root)}
        workspace.create_worker_dirs("w-x", env)
        target = root if level == "root" else _level_path(root, level)
        target.chmod(0o755)
        foreign = os.stat(target).st_ino
        real_fstat = os.fstat

        def fstat(fd: int) -> os.stat_result:  # as if another user owned that one directory
            st_ = real_fstat(fd)
            if st_.st_ino != foreign:
                return st_
            fields = list(st_[:10])
            fields[4] = os.geteuid() + 1
            return os.stat_result(fields)

        below = _tree(target)
        with monkeypatch.context() as m:
            m.setattr(os, "fstat", fstat)
            slot = "w-y" if level in ("root", "workers", "host") else "w-x"  # a path through the target
            outcome = tally.run(workspace.create_worker_dirs, slot, env, expect=workspace.WorkspaceError)
        assert outcome[0] == "error" and "belongs to uid" in str(outcome[1]) and str(target) in str(outcome[1])
        assert stat.S_IMODE(os.stat(target).st_mode) == 0o755, "a foreign directory is not chmod-ed"
        if level in ("root", "workers", "host"):
            assert _tree(target) == below, "nothing is created inside a foreign directory"


# -- env values already set --------------------------------------------------------------------
NUMERIC_OR_FLAG = {
    "NCCL_CUMEM_ENABLE": "0",
    "NCCL_NVLS_ENABLE": "0",
    "CUDA_DEVICE_MAX_CONNECTIONS": "8",
    "TRTLLM_ENABLE_PDL": "1",
    "SGLANG_BLOCK_NONZERO_RANK_CHILDREN": "0",
}
CERTAINLY_INVALID = [
    "",
    " ",
    "yes",
    "true",
    "-1",
    "0x1",
    "1.0",
    "1e3",
    " 1",
    "1 ",
    "+1",
    "\u0661",  # Arabic-Indic one
    "\uff11",  # fullwidth one
    "\u2167",  # Roman numeral eight
    "\U0001d7d9",  # mathematical double-struck one
    "9" * 5000,  # more digits than int() accepts by default
    "1" * 4301,
    "99999999999999999999",
    "\x7f",
    "1\x00",
]
ODD_VALUES = st.one_of(
    st.sampled_from(CERTAINLY_INVALID),
    st.text(max_size=40),
    st.integers().map(str),
    st.integers(min_value=1, max_value=20).map(lambda n: "9" * (n * 300)),
)
ENV_NAMES = [*envpolicy.MANAGED_NAMES, "RANK", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"]
FACTS = [
    envpolicy.EnvFacts(),
    envpolicy.EnvFacts(symm_mem_args=False, nccl_nvls_arg=False, trtllm_pdl=False, cuda_device_max_connections="4"),
    envpolicy.EnvFacts(upstream_cumem=True),
]


def _plan_everything(
    environ: Mapping[str, str], user: Mapping[str, str], facts: envpolicy.EnvFacts, cache: Path
) -> Any:
    worker = envpolicy.worker_from_args({}, None, environ, facts)
    changes = envpolicy.plan(
        {}, environ, worker, user_env=user, facts=facts, cache_environ={workspace.CACHE_DIR_ENV: str(cache)}
    )
    process_env = dict(environ)
    envpolicy.apply_to_process(changes, process_env)
    dirs = workspace.create_worker_dirs(worker.slot, {workspace.CACHE_DIR_ENV: str(cache)})
    return changes, process_env, envpolicy.child_environment(changes), dirs


def test_certainly_invalid_values_are_reported_and_replaced(tmp_path: Path) -> None:
    with tallying("env values") as tally:
        for facts in FACTS:
            for odd in CERTAINLY_INVALID:
                # the worker slot's sources too: no name, no usable GPU id, then RANK decides
                environ = dict.fromkeys([*NUMERIC_OR_FLAG, "CUDA_VISIBLE_DEVICES", "RANK", "LOCAL_RANK"], odd)
                outcome = tally.run(_plan_everything, environ, environ, facts, tmp_path / "cache")
                assert outcome[0] == "ok", outcome
                changes = {c.name: c for c in outcome[1][0]}
                tally.errors += 1  # every odd value is reported (warn=True) and replaced: checked below
                for name, default in NUMERIC_OR_FLAG.items():
                    if name not in changes:
                        continue  # this release has no such variable
                    change = changes[name]
                    assert change.warn, (name, odd, change)
                    if facts.symm_mem_args or not name.startswith("NCCL_"):
                        assert "not valid" in change.reason, (name, odd, change.reason)
                        expected = (
                            facts.cuda_device_max_connections if name == "CUDA_DEVICE_MAX_CONNECTIONS" else default
                        )
                        assert change.new == expected, (name, odd, change)


def test_any_odd_environment_is_planned_without_raising(tmp_path: Path) -> None:
    with tallying("env values") as tally:
        cache = tmp_path / "cache"

        @SETTINGS
        @given(
            environ=st.dictionaries(st.sampled_from(ENV_NAMES), ODD_VALUES, max_size=len(ENV_NAMES)),
            overwritten=st.dictionaries(st.sampled_from(ENV_NAMES), ODD_VALUES, max_size=4),
            facts=st.sampled_from(FACTS),
        )
        def check(environ: dict[str, str], overwritten: dict[str, str], facts: envpolicy.EnvFacts) -> None:
            now = {**environ, **overwritten}  # what upstream left, over what the user had
            outcome = tally.run(_plan_everything, now, environ, facts, cache)
            assert outcome[0] == "ok", outcome
            changes, process_env, child_env, dirs = outcome[1]
            assert {name for name, _ in child_env} == {c.name for c in changes}
            assert [c.name for c in changes if c.name in envpolicy.MANAGED_NAMES] == [c.name for c in changes]
            for change in changes:
                user = environ.get(change.name)
                if (
                    change.new is not None
                    and change.new != user
                    and user is not None
                    and change.scope == envpolicy.PROCESS
                ):
                    # the user's value was not kept: that is said out loud, unless a server argument
                    # or upstream's own value on an old release decided
                    assert change.warn or "required" in change.reason or "forces" in change.reason, change
            if any(c.warn for c in changes):
                tally.errors += 1  # an odd value reported (and replaced)
            assert all(isinstance(v, str) for v in process_env.values())
            for path in dirs.values():
                _assert_private_inside(path, cache)

        check()


# -- server args -------------------------------------------------------------------------------
UNIT_FIELDS = frozenset(
    {
        "model_path",
        "tokenizer_path",
        "load_format",
        "device",
        "tp_size",
        "dp_size",
        "pp_size",
        "ep_size",
        "nnodes",
        "node_rank",
        "base_gpu_id",
        "gpu_id_step",
        "port",
        "nccl_port",
        "mem_fraction_static",
        "skip_tokenizer_init",
        "disable_cuda_graph",
        "enable_symm_mem",
        "enable_nccl_nvls",
        "random_seed",
    }
)
POSITIVE = ("tp_size", "dp_size", "pp_size", "ep_size", "nnodes")
NON_NEGATIVE = ("base_gpu_id", "node_rank")
PORTS = ("port", "nccl_port")
WRONG_TYPES = st.one_of(
    st.booleans(),
    st.text(max_size=10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.binary(max_size=4),
    st.just(object()),
    st.complex_numbers(max_magnitude=2),
)


def bad_value(name: str) -> st.SearchStrategy[Any]:
    if name == "mem_fraction_static":
        return st.one_of(
            st.floats().filter(lambda f: not 0 < f < 1),
            st.integers().filter(lambda i: not 0 < i < 1),
            st.booleans(),
            st.text(max_size=5),
            st.just(float("nan")),
            st.just("0.5"),
        )
    if name in POSITIVE:
        return st.one_of(
            st.integers(max_value=0), WRONG_TYPES.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
        )
    if name in NON_NEGATIVE:
        return st.one_of(
            st.integers(max_value=-1), WRONG_TYPES.filter(lambda v: not isinstance(v, int) or isinstance(v, bool))
        )
    if name in PORTS:
        return st.one_of(
            st.integers().filter(lambda i: not 0 < i < 65536),
            WRONG_TYPES.filter(lambda v: not isinstance(v, int) or isinstance(v, bool)),
        )
    assert name == "model_path"
    return st.one_of(st.just(""), st.integers(), st.none(), st.lists(st.text(), max_size=2), st.binary(max_size=4))


def good_args() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"model_path": st.text(min_size=1, max_size=20)},
        optional={
            "tp_size": st.integers(1, 64),
            "dp_size": st.integers(1, 64),
            "nnodes": st.integers(1, 8),
            "node_rank": st.integers(0, 7),
            "base_gpu_id": st.integers(0, 7),
            "port": st.integers(1, 65535),
            "mem_fraction_static": st.floats(0.01, 0.99),
            "load_format": st.sampled_from(["dummy", "auto"]),
        },
    )


CHECKED = ("mem_fraction_static", *POSITIVE, *NON_NEGATIVE, *PORTS, "model_path")


def _misspell(name: str, how: int) -> str:
    if how == 0:
        return name + "s"
    if how == 1:
        return name.upper()
    if how == 2:
        return name.replace("_", "-")
    return name[1:] + name[0]


def server_args_properties(tally: Tally, known: frozenset[str] | None, fields: frozenset[str]) -> None:
    @SETTINGS
    @given(good_args())
    def good(args: dict[str, Any]) -> None:
        outcome = tally.run(serverargs.check, args, known, expect=ServerArgsError)
        assert outcome == ("ok", None), (args, outcome)

    @SETTINGS
    @given(
        good_args(),
        st.sampled_from([n for n in CHECKED if n in fields]).flatmap(lambda n: st.tuples(st.just(n), bad_value(n))),
    )
    def wrong_value(args: dict[str, Any], bad: tuple[str, Any]) -> None:
        name, value = bad
        outcome = tally.run(serverargs.check, {**args, name: value}, known, expect=ServerArgsError)
        assert outcome[0] == "error", (name, value, outcome)
        assert name in str(outcome[1])

    @SETTINGS
    @given(
        good_args(),
        st.one_of(
            st.text(min_size=1, max_size=40),
            st.sampled_from(sorted(fields)).flatmap(lambda n: st.integers(0, 3).map(lambda how: _misspell(n, how))),
            st.integers(100, 10_000).map(lambda n: "k" * n),
        ).filter(lambda k: k not in fields),
        st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    )
    def unknown_name(args: dict[str, Any], key: str, value: Any) -> None:
        outcome = tally.run(serverargs.check, {**args, key: value}, known, expect=ServerArgsError)
        assert outcome[0] == "error", (key, outcome)
        assert "unknown SGLang server argument" in str(outcome[1])

    @SETTINGS
    @given(
        st.dictionaries(
            st.one_of(st.sampled_from(sorted(fields)), st.text(max_size=12)),
            st.one_of(st.none(), WRONG_TYPES, st.integers()),
            max_size=8,
        )
    )
    def anything(args: dict[str, Any]) -> None:
        tally.run(serverargs.check, args, known, expect=ServerArgsError)

    good()
    wrong_value()
    unknown_name()
    anything()
    outcome = tally.run(serverargs.check, {"tp_size": 1}, known, expect=ServerArgsError)
    assert outcome[0] == "error" and "model_path is required" in str(outcome[1])


def test_server_args_against_a_known_field_set() -> None:
    with tallying("server args") as tally:
        server_args_properties(tally, UNIT_FIELDS, UNIT_FIELDS)
        outcome = tally.run(serverargs.check, {"model_path": "m", "tp_szie": 2}, UNIT_FIELDS, expect=ServerArgsError)
        assert "did you mean 'tp_size'" in str(outcome[1])


@pytest.mark.sglang
def test_server_args_against_the_real_server_args() -> None:
    with tallying("server args") as tally:
        fields = serverargs.field_names()
        assert {"model_path", "tp_size", "dp_size", "mem_fraction_static", "port"} <= fields and len(fields) > 100
        outcome = tally.run(serverargs.check, dict.fromkeys(fields) | {"model_path": "m"}, None, expect=ServerArgsError)
        assert outcome == ("ok", None), "every real field name is accepted"
        server_args_properties(tally, None, fields)


@pytest.mark.sglang
@pytest.mark.parametrize(
    "bad",
    [
        {"tp_size": "2"},
        {"tp_size": 0},
        {"tp_size": True},
        {"mem_fraction_static": 1.0},
        {"mem_fraction_static": float("nan")},
        {"port": 70000},
        {"base_gpu_id": -1},
        {"model_pth": "x"},
        {"model_path": ""},
        {"definitely_not_an_arg": 1},
    ],
)
def test_bad_server_args_fail_before_any_launch(
    bad: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with tallying("server args") as tally:
        import fake_launch

        from sglang_roll_compat import Engine
        from sglang_roll_compat.models import tiny_model_path

        monkeypatch.setenv(workspace.CACHE_DIR_ENV, str(tmp_path / "cache"))
        fake = fake_launch.install(monkeypatch)
        args = {"model_path": tiny_model_path(), "load_format": "dummy", "device": "cuda", **bad}
        outcome = tally.run(lambda: Engine(**args), expect=ServerArgsError)
        assert outcome[0] == "error", outcome
        assert fake.managers == [], "nothing was launched"
