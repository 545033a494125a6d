"""The package's shape (issue 12): few modules, none long, a shallow import graph, every public name documented."""

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mtst"
MAX_MODULES, MAX_LINES, MAX_FLOORS = 20, 300, 8


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, tree: ast.Module) -> set[str]:
    """The package modules one module imports, at the top or inside a function."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # ``from . import x`` imports the module x; the package itself is only its parent
            targets = [base] * bool(node.module) + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imported(name, ast.parse(path.read_text())) for name, path in MODULES.items()}


@cache
def floors(name: str, seen: frozenset = frozenset()) -> int:
    """Modules in the longest import chain that starts at ``name`` (a module importing nothing: 1)."""
    if name in seen:
        raise AssertionError(f"import cycle through {name}")
    return 1 + max((floors(dep, seen | {name}) for dep in GRAPH[name]), default=0)


def test_few_modules():
    assert len(MODULES) <= MAX_MODULES, sorted(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES


def test_no_import_cycle_and_few_floors():
    depth = {name: floors(name) for name in GRAPH}
    assert max(depth.values()) <= MAX_FLOORS, sorted(depth.items(), key=lambda kv: -kv[1])


def public_definitions(tree: ast.Module):
    """Module-level functions and classes, and the methods of those classes, whose names are public."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield node.name, node
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                        yield f"{node.name}.{item.name}", item


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_name_says_what_it_is_for(name):
    tree = ast.parse(MODULES[name].read_text())
    assert ast.get_docstring(tree), f"{name}: no module docstring"
    missing = [qualname for qualname, node in public_definitions(tree) if not ast.get_docstring(node)]
    assert not missing, f"{name}: no docstring on {missing}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_runs_as_a_script(name):
    """The command line is ``python -m mtst``; no other module carries a ``__main__`` block."""
    if name == "mtst.__main__":
        return
    tree = ast.parse(MODULES[name].read_text())
    assert not any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)
