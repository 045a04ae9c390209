"""Documentation checked against the code, so it cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "blackroad"


def architecture_table() -> list[tuple[str, list[str]]]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = re.findall(r"^\| `([a-z_./]+)` \| (.+) \|$", text, flags=re.MULTILINE)
    return [
        (name, re.findall(r"`([a-z_]+\.(?:py|jinja)|[a-z_]+/)`", cells)) for name, cells in rows
    ]


@pytest.mark.parametrize(("package", "modules"), architecture_table())
def test_every_module_in_the_architecture_table_exists(package: str, modules: list[str]) -> None:
    base = SRC / package
    assert base.exists(), f"docs/architecture.md names {package}, which does not exist"
    for module in modules:
        assert (base / module).exists() or next(base.rglob(module.rstrip("/")), None), (
            f"docs/architecture.md names {package}{module}, which does not exist"
        )


def test_every_package_is_in_the_architecture_table() -> None:
    documented = {name.rstrip("/") for name, _ in architecture_table()}
    packages = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert packages - documented == set()


def test_readme_starts_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line.split("#")[0].strip() for line in readme[:8] if "scripts/dev.py" in line]
    assert commands == ["python3 scripts/dev.py up", "python3 scripts/dev.py test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert ci.rstrip().splitlines()[-1] == commands[1]


@pytest.mark.parametrize("document", ["README.md", "docs/security.md"])
def test_every_setting_a_document_names_exists(document: str) -> None:
    import dataclasses

    from blackroad.config import Settings

    named = set(re.findall(r"`BLACKROAD_([A-Z_]+)`", (ROOT / document).read_text()))
    fields = {f.name.upper() for f in dataclasses.fields(Settings)}
    assert named and named - fields == set()


def test_every_file_docs_security_names_exists() -> None:
    """The threat model names the code of each defence and the tests that prove it."""
    text = (ROOT / "docs" / "security.md").read_text()
    named = set(re.findall(r"`([a-z0-9_/]+\.py)(?::[^`]*)?`", text))
    assert len(named) > 20
    missing = {path for path in named if not (ROOT / path).exists() and not (SRC / path).exists()}
    assert missing == set(), f"docs/security.md names files that do not exist: {missing}"
