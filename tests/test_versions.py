"""The version gate: detection from metadata, the support table, every refusal path."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pytest
from helpers import make_fake_sglang, run_python

import sglang_roll_compat
from sglang_roll_compat import _support_table, versions
from sglang_roll_compat.errors import UnsupportedVersionError

ROLL_VERSIONS = [
    "0.4.6.post1",
    "0.4.6.post4",
    "0.4.6.post5",
    "0.4.10.post2",
    "0.5.2",
    "0.5.4.post2",
    "0.5.5.post3",
    "0.5.6.post2",
    "0.5.7",
]


def test_every_roll_version_is_supported_with_its_family() -> None:
    expected = {
        "0.4.6.post1": "v046post4",
        "0.4.6.post4": "v046post4",
        "0.4.6.post5": "v046post4",
        "0.4.10.post2": "v0410",
        "0.5.2": "v052",
        "0.5.4.post2": "v054",
        "0.5.5.post3": "v054",
        "0.5.6.post2": "v054",
        "0.5.7": "v054",
    }
    for version, family in expected.items():
        assert versions.family_for(version) == family


def test_every_family_folder_exists_and_loads() -> None:
    import importlib

    for family in versions.families():
        module = importlib.import_module(f"sglang_roll_compat.{family}")
        assert module.FAMILY.name == family
        assert module.FAMILY.patches, family


def test_supported_versions_are_sorted_oldest_first() -> None:
    listed = sglang_roll_compat.supported_versions()
    assert listed[0] == "0.4.6"
    assert list(listed) == sorted(listed, key=versions.Version)
    assert set(ROLL_VERSIONS) <= set(listed)


@pytest.mark.parametrize(
    "bad", ["0.4.9.post3", "0.4.5.post3", "0.5.2rc1", "0.5.2+local", "0.5.7.post1", "0.5.2.dev3", "1.0.0"]
)
def test_untested_versions_are_refused_with_a_helpful_message(bad: str) -> None:
    with pytest.raises(NotImplementedError) as info:
        versions.family_for(bad)
    error = info.value
    assert isinstance(error, UnsupportedVersionError)
    message = str(error)
    assert repr(bad) in message
    for supported in sglang_roll_compat.supported_versions():
        assert supported in message
    assert "pip install 'sglang==" in message
    assert error.found == bad
    assert error.supported == sglang_roll_compat.supported_versions()


@pytest.mark.parametrize("garbage", ["", " ", "latest", "0.5.2 ", "ü.5", "x" * 10_000, "0.5.2\n", "\x00"])
def test_garbage_version_strings_get_the_same_clear_error(garbage: str) -> None:
    with pytest.raises(UnsupportedVersionError) as info:
        versions.family_for(garbage)
    assert len(str(info.value)) < 2000  # a 10 kB string is not repeated whole


def test_normalised_spellings_of_a_supported_release_are_the_same_release() -> None:
    # PEP 440: these are the very same release as 0.5.2 / 0.4.6.post4
    assert versions.family_for("0.5.2.0") == "v052"
    assert versions.family_for("0.4.6-post4") == "v046post4"


def test_the_support_table_is_data_without_imports() -> None:
    source = Path(_support_table.__file__).read_text()
    assert "import " not in source.replace("# ", "").split('"""', 2)[-1]
    assert _support_table.DEFAULT_VERSION in _support_table.SUPPORTED_VERSIONS


# -- detection in a fresh interpreter against fake installs ----------------------------------
IMPORT_AND_REPORT = textwrap.dedent(
    """
    import json, sys
    try:
        import sglang_roll_compat as s
    except BaseException as exc:
        print(json.dumps({"error": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                          "message": str(exc)}))
    else:
        print(json.dumps({"family": s.FAMILY.name, "version": s.SELECTION.installed.version,
                          "forced": s.SELECTION.forced, "heavy": sorted(m for m in sys.modules
                          if m.startswith("sglang.") or m == "torch")}))
    """
)


def _import_with(tmp_path: Path, **env: str) -> dict[str, object]:
    result = run_python(IMPORT_AND_REPORT, prepend=[tmp_path], env=env)
    assert result.returncode == 0, result.stderr
    out: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    out["stderr"] = result.stderr
    return out


def test_supported_fake_install_selects_its_family_without_importing_sglang(tmp_path: Path) -> None:
    make_fake_sglang(tmp_path, "0.5.4.post2")
    out = _import_with(tmp_path)
    assert out["family"] == "v054"
    assert out["forced"] is False
    assert out["heavy"] == []  # nothing of SGLang (nor torch) was imported


@pytest.mark.parametrize("version", ["0.4.9.post3", "0.4.5.post3", "0.5.2rc1", "0.5.2+local", "0.5.7.post1"])
def test_unsupported_fake_install_raises_not_implemented(tmp_path: Path, version: str) -> None:
    make_fake_sglang(tmp_path, version)
    out = _import_with(tmp_path)
    assert out["error"] == "UnsupportedVersionError"
    assert "NotImplementedError" in out["mro"]  # type: ignore[operator]
    message = str(out["message"])
    assert version in message and "0.5.7" in message and "pip install 'sglang==" in message


@pytest.mark.skipif(
    importlib.util.find_spec("sglang") is not None
    and "fake-sglang" not in str(importlib.util.find_spec("sglang").origin),
    reason="a real SGLang is installed in this venv",
)
def test_no_sglang_installed_gives_a_clear_import_error() -> None:
    # the unit session's venv has no SGLang: drop the conftest's fake from the child's path
    result = run_python(IMPORT_AND_REPORT, env={"PYTHONPATH": ""})
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["error"] == "SGLangNotInstalledError"
    assert "ImportError" in out["mro"]
    assert "SGLang is not installed" in out["message"]


def test_no_sglang_in_an_empty_site_dir(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import importlib.util, json, sys
        real_find_spec = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "sglang" else real_find_spec(name, *a)
        try:
            import sglang_roll_compat
        except ImportError as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        """
    )
    result = run_python(code)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["error"] == "SGLangNotInstalledError"
    assert "SGLang is not installed" in out["message"]


def test_metadata_and_dunder_version_disagreeing_is_a_broken_install(tmp_path: Path) -> None:
    make_fake_sglang(tmp_path, "0.5.2", declared_version="0.5.3")
    out = _import_with(tmp_path)
    assert out["error"] == "BrokenInstallError"
    assert "0.5.2" in str(out["message"]) and "0.5.3" in str(out["message"])


def test_setuptools_scm_version_file_is_read(tmp_path: Path) -> None:
    make_fake_sglang(tmp_path, "0.5.7", version_file="_version.py")
    out = _import_with(tmp_path)
    assert out["family"] == "v054"


def test_two_dist_infos_are_a_broken_install(tmp_path: Path) -> None:
    make_fake_sglang(tmp_path, "0.5.2", extra_dist_infos=["0.5.4.post2"])
    out = _import_with(tmp_path)
    assert out["error"] == "BrokenInstallError"
    assert "Several SGLang installs" in str(out["message"])


def test_forcing_a_family_for_an_untested_version_warns_loudly(tmp_path: Path) -> None:
    make_fake_sglang(tmp_path, "0.4.9.post3")
    out = _import_with(tmp_path, SGLANG_ROLL_COMPAT_FORCE_FAMILY="v052")
    assert out["family"] == "v052"
    assert out["forced"] is True
    assert "FORCING patch family 'v052' onto UNTESTED SGLang 0.4.9.post3" in str(out["stderr"])


def test_forcing_an_unknown_family_is_refused(tmp_path: Path) -> None:
    make_fake_sglang(tmp_path, "0.4.9.post3")
    out = _import_with(tmp_path, SGLANG_ROLL_COMPAT_FORCE_FAMILY="v999")
    assert out["error"] == "UnsupportedVersionError"
    assert "names no family" in str(out["message"])


def test_select_is_pure_given_an_install() -> None:
    installed = versions.InstalledSGLang("0.4.9.post3", "/x", "test", "0.4.9.post3")
    with pytest.raises(UnsupportedVersionError):
        versions.select(installed, environ={})
    forced = versions.select(installed, environ={"SGLANG_ROLL_COMPAT_FORCE_FAMILY": "v054"})
    assert forced.family == "v054" and forced.forced
