"""The benchmarks and the lab import from the library by name; a name the library dropped or
moved breaks a script nobody runs in the suite. Each ``from parsenet... import name`` there
must resolve against the installed package."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("benchmarks/**/*.py"), *ROOT.glob("lab/**/*.py")])


def _parsenet_imports(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module and (
                node.module == "parsenet" or node.module.startswith("parsenet.")):
            pairs.extend((node.module, alias.name) for alias in node.names)
    return pairs


def _resolves(module: str, name: str) -> bool:
    found = importlib.import_module(module)
    if hasattr(found, name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_library_name_imported_outside_the_package_exists(path: Path) -> None:
    missing = [f"{module}.{name}" for module, name in _parsenet_imports(path)
               if not _resolves(module, name)]
    assert missing == [], f"{path.relative_to(ROOT)} imports names the library lacks"


def test_the_check_sees_a_missing_name(tmp_path: Path) -> None:
    script = tmp_path / "stale.py"
    script.write_text("from parsenet.engine.trainer import build_dataset_default\n")
    pairs = _parsenet_imports(script)
    assert pairs == [("parsenet.engine.trainer", "build_dataset_default")]
    assert not _resolves(*pairs[0])
