"""Docs stay in step with the code: every config key is documented, every shipped config validates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ndkd.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]


def config_keys(cls=Config, prefix=""):
    for field in dataclasses.fields(cls):
        path = f"{prefix}{field.name}"
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            if path == "teacher.train":  # documented once as `teacher.train.*` (same keys as `train`)
                yield path + ".*"
                continue
            yield from config_keys(type(default), path + ".")
        else:
            yield path


def test_every_config_key_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [key for key in config_keys() if f"`{key}`" not in text]
    assert missing == []


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    config = load_config(path)
    assert config.name


def test_readme_python_example_runs():
    text = (ROOT / "README.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own documentation snippet
    assert set(namespace["losses"]) == {"ce", "kd", "nd"}
    assert namespace["distiller"].nd.projector is None  # resnet8 and resnet20 both have 64-d embeddings
    assert namespace["student"].conv1.weight.grad is not None


def relative_links(path: Path) -> list[str]:
    """Targets of the markdown links and images of a file that point inside the repository."""
    import re

    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
    return [t.split("#", 1)[0] for t in targets if not t.startswith(("http://", "https://", "#", "mailto:"))]


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name)
def test_documentation_links_point_at_files_that_exist(path):
    broken = [target for target in relative_links(path) if not (path.parent / target).exists()]
    assert broken == [], f"{path.relative_to(ROOT)} links to missing files: {broken}"
