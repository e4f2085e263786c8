"""Documentation that is generated from data must match that data."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(path: Path, name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_capabilities_doc_is_rendered_from_the_golden_table() -> None:
    render = _load(ROOT / "tools" / "render_capabilities.py", "render_capabilities")
    golden = json.loads((ROOT / "tests" / "golden" / "capabilities.json").read_text())
    assert (ROOT / "docs" / "capabilities.md").read_text() == render.render(golden)


def test_golden_table_covers_every_supported_release() -> None:
    table = _load(ROOT / "sglang_roll_compat" / "_support_table.py", "_support_table_for_docs")
    golden = json.loads((ROOT / "tests" / "golden" / "capabilities.json").read_text())
    assert set(golden) == set(table.SUPPORTED_VERSIONS)


def test_readme_support_matrix_names_every_supported_release() -> None:
    table = _load(ROOT / "sglang_roll_compat" / "_support_table.py", "_support_table_for_readme")
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Supported SGLang versions", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"\b0\.\d+\.\d+(?:\.post\d+)?\b", section))
    assert set(table.SUPPORTED_VERSIONS) <= listed
    for family in set(table.SUPPORTED_VERSIONS.values()):
        assert f"`{family}`" in section


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"All tests.*?```bash\n([^\n]+)\n```", readme, re.DOTALL)
    assert command, "README has no 'All tests' command block"
    test_command = command.group(1).split("&&")[-1].strip()
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_integrations_doc_names_real_tests() -> None:
    """Every claim in docs/integrations.md names its test: each named test must exist."""
    doc = (ROOT / "docs" / "integrations.md").read_text()
    named = set(re.findall(r"tests/(test_\w+\.py)::(test_\w+)", doc))
    assert len(named) >= 10
    for filename, test in sorted(named):
        source = (ROOT / "tests" / filename).read_text()
        assert re.search(rf"^def {test}\(", source, re.MULTILINE), f"{filename}::{test} is named but missing"
    for framework in ("verl", "slime", "AReaL", "Ray"):
        assert re.search(rf"^### {framework}$", doc, re.MULTILINE), f"no {framework} section"
    sources = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    bare = set(re.findall(r"`(test_\w+)`", doc))
    assert len(bare) >= 10
    for test in sorted(bare):
        assert re.search(rf"^(async )?def {test}\(", sources, re.MULTILINE), f"{test} is named but missing"


def test_readme_links_the_performance_tables_and_they_are_dated() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Performance", 1)[1].split("\n## ", 1)[0]
    assert "(docs/performance.md)" in section
    perf = (ROOT / "docs" / "performance.md").read_text()
    headings = [line for line in perf.splitlines() if line.startswith("## ")]
    assert any(h.startswith("## GPU") for h in headings) and any(h.startswith("## CPU") for h in headings)
    for heading in headings:  # every table says when and where it was measured
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", heading), heading
    for raw in re.findall(r"`(docs/[\w./-]+)/`", perf):  # the raw results it cites are in the tree
        assert (ROOT / raw).is_dir(), raw
