"""The ROLL env profile's data, for every supported release (pure: no SGLang needed)."""

from __future__ import annotations

import importlib

import pytest
from packaging.version import Version

from sglang_roll_compat import envpolicy, versions
from sglang_roll_compat._support_table import SUPPORTED_VERSIONS
from sglang_roll_compat.roll import env as roll_env

TF_CPP_LAST_SET_BY_UPSTREAM = "0.5.5.post2"  # the newest release whose _set_envs_and_config sets it


def _facts(release: str) -> envpolicy.EnvFacts:
    family = importlib.import_module(f"sglang_roll_compat.{SUPPORTED_VERSIONS[release]}").FAMILY
    return family.env  # type: ignore[no-any-return]


@pytest.mark.parametrize("release", versions.supported_versions())
def test_roll_variables_per_release_and_who_sets_them(release: str) -> None:
    extras = {name: upstream for name, _, _, upstream in roll_env.extras(release, _facts(release))}
    parts = tuple(int(p) for p in release.split(".")[:3])
    expected = {"TF_CPP_MIN_LOG_LEVEL"}
    if parts >= (0, 5, 4):
        expected |= {"CUTE_DSL_LOG_LEVEL", "CUTE_DSL_LOG_TO_CONSOLE"}
    if parts < (0, 5):
        expected.add("TORCH_NCCL_AVOID_RECORD_STREAMS")
    assert set(extras) == expected
    assert set(extras) <= set(envpolicy.PROFILE_NAMES)
    # upstream (read from the wheels) forces TF_CPP in every release up to 0.5.5.post2 (gone from
    # 0.5.5.post3) and sets CUTE_DSL_* from 0.5.3: ROLL's value is only needed for TF_CPP_MIN_LOG_LEVEL
    # from 0.5.5.post3 on (tests/test_roll.py checks the family data against the installed wheel)
    assert extras["TF_CPP_MIN_LOG_LEVEL"] == (Version(release) <= Version(TF_CPP_LAST_SET_BY_UPSTREAM))
    assert all(upstream for name, upstream in extras.items() if name != "TF_CPP_MIN_LOG_LEVEL")


def test_extra_var_precedence_user_then_upstream_then_roll() -> None:
    var = envpolicy.ExtraVar("TF_CPP_MIN_LOG_LEVEL", "3", "ROLL: quiet")
    worker = envpolicy.Worker("w")

    def decide(environ: dict[str, str], user: dict[str, str], upstream: bool = False) -> envpolicy.EnvChange:
        extra = envpolicy.ExtraVar(var.name, var.value, var.reason, upstream)
        changes = envpolicy.plan({}, environ, worker, user_env=user, extras=[extra])
        return next(c for c in changes if c.name == var.name)

    ours = decide({}, {})
    assert (ours.action, ours.new, ours.reason) == ("set", "3", "ROLL: quiet")
    mine = decide({"TF_CPP_MIN_LOG_LEVEL": "3"}, {"TF_CPP_MIN_LOG_LEVEL": "0"})  # upstream forced 3 over my 0
    assert (mine.action, mine.new) == ("set", "0") and "restored" in mine.reason
    theirs = decide({"TF_CPP_MIN_LOG_LEVEL": "2"}, {})  # set during the launch: upstream's
    assert (theirs.action, theirs.new) == ("keep", "2") and "SGLang sets it itself" in theirs.reason
    preview = decide({}, {}, upstream=True)  # a plan before the launch, family data says upstream sets it
    assert preview.new == "3" and "SGLang sets it itself" in preview.reason


def test_without_extras_the_policy_touches_no_profile_name() -> None:
    changes = envpolicy.plan({}, {}, envpolicy.Worker("w"))
    assert not {c.name for c in changes} & set(envpolicy.PROFILE_NAMES)
