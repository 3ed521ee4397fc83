"""The lab uses parsenet's public API only: every name it imports from parsenet is public
(no leading underscore anywhere in its path) and, where the module declares ``__all__``,
listed there or a submodule. Read with ast; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"


def _module_file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _declared_all(path: Path) -> set[str] | None:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
    return None


def lab_imports() -> list[tuple[str, str, str]]:
    """(lab file, parsenet module, name) for every ``from parsenet... import name``."""
    found = []
    for path in sorted((REPO / "lab").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("parsenet"):
                found += [(str(path.relative_to(REPO)), node.module, a.name) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(str(path.relative_to(REPO)), a.name, "") for a in node.names
                          if a.name.startswith("parsenet")]
    return found


def test_the_lab_imports_parsenet() -> None:
    assert ("lab/study/__main__.py", "parsenet.cli", "main") in lab_imports()


def test_the_lab_imports_only_public_names() -> None:
    private = []
    for where, module, name in lab_imports():
        if any(part.startswith("_") for part in [*module.split("."), name] if part):
            private.append((where, module, name))
            continue
        path = _module_file(module)
        declared = _declared_all(path) if path else None
        if name and declared is not None and name not in declared \
                and _module_file(f"{module}.{name}") is None:
            private.append((where, module, name))
    assert private == []
