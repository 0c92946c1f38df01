"""The package's structure: no import circles among its modules, counting imports inside functions too.

A module that imports a package reaches the package's ``__init__``; ``from pkg import name`` reaches ``pkg.name``
when that is a module. Imports under ``if TYPE_CHECKING:`` count as well: they are what a reader follows.
"""

import ast
from pathlib import Path

import tks

SOURCE = Path(tks.__file__).parent


def module_names(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (at ``path``) imports anywhere in its text."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from the importing module's package
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return {m for m in found if m in modules and m != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each circle found by depth-first search, as the path from a module back to itself."""
    state: dict[str, str] = {}  # "open" while on the search path, "done" after
    path: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                found.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_module_of_tks_takes_part_in_an_import_circle():
    graph = import_graph(SOURCE)
    assert len(graph) > 50 and "tks.sweep.spec" in graph  # the whole package was read
    assert circles(graph) == []


def test_the_circle_check_finds_a_planted_circle(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg import low\n")
    (package / "low.py").write_text("def f():\n    from .sub import deep\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "deep.py").write_text("import pkg\n")  # deep -> pkg (__init__) -> low -> deep
    (package / "free.py").write_text("import pkg.sub\n")
    (found,) = circles(import_graph(package))
    assert set(found) == {"pkg", "pkg.low", "pkg.sub.deep"}


def test_the_version_module_imports_nothing():
    text = (SOURCE / "version.py").read_text(encoding="utf-8")
    assert not [n for n in ast.walk(ast.parse(text)) if isinstance(n, ast.Import | ast.ImportFrom)]
    assert tks.__version__ == tks.version.__version__
