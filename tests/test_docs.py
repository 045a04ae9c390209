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


def test_every_setting_in_the_readme_exists() -> None:
    import dataclasses

    from blackroad.config import Settings

    named = set(re.findall(r"`BLACKROAD_([A-Z_]+)`", (ROOT / "README.md").read_text()))
    fields = {f.name.upper() for f in dataclasses.fields(Settings)}
    assert named and named - fields == set()
