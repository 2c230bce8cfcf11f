"""README's module map ("How it works") against the tree: a newcomer finds every module there."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _module_map() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## How it works\n", 1)[1]
    return section.split("```", 2)[1]


def test_every_module_is_named_in_the_module_map() -> None:
    text = _module_map()
    modules = [p for root in ("oeagent", "lab") for p in (REPO / root).rglob("*.py")
               if p.name != "__init__.py"]
    assert len(modules) > 80
    missing = sorted(str(p.relative_to(REPO)) for p in modules if p.name not in text)
    assert missing == []


def test_every_file_the_module_map_names_exists() -> None:
    names = set(re.findall(r"\b([a-z0-9_]+\.py)\b", _module_map()))
    files = {p.name for root in ("oeagent", "lab") for p in (REPO / root).rglob("*.py")}
    assert sorted(names - files) == []
