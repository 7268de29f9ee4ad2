"""The layout's import rules (docs/architecture.md, "Boundaries"), checked rather than reviewed."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
CORE_ALLOWED = {
    "__future__",
    "dataclasses",
    "enum",
    "hashlib",
    "typing",
    "collections",
    "itertools",
    "bisect",
    "msgspec",
    "gastown_client",
    "gastownd",
    "calendar",
    "datetime",
    "fnmatch",
    "array",
    "zlib",
    "re",
    "uuid",
    "heapq",
    "shlex",
    "operator",
}
CORE_FORBIDDEN = {
    "anyio",
    "asyncio",
    "sqlite3",
    "os",
    "socket",
    "fcntl",
    "time",
    "structlog",
    "watchfiles",
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_core_is_pure() -> None:
    for path in (SRC / "gastownd" / "core").glob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            assert top not in CORE_FORBIDDEN, f"{path.name} imports {module}"
            assert top in CORE_ALLOWED, f"{path.name} imports {module}"
            if top == "gastownd":
                assert module.startswith(("gastownd.core", "gastownd.process.refusals")), module
            if top == "gastown_client":
                assert module == "gastown_client.protocol", module


def module_level_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_client_never_imports_the_daemon_or_structlog() -> None:
    for path in (SRC / "gastown_client").rglob("*.py"):
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top == "gastownd" and path.parts[-2:] == ("commands", "setup.py"):
                # `gastownctl federation check` runs the daemon's code when it is installed,
                # imported in that command only (it says what to install otherwise).
                assert module not in module_level_imports(path), module
                continue
            assert top not in ("gastownd", "structlog"), f"{path.name} imports {module}"
            if top in ("anyio", "asyncio"):
                assert path.name == "aclient.py", f"{path.name} imports {module}"


def test_hook_path_loads_no_heavy_module() -> None:
    code = (
        "import sys, gastown_client, gastown_client.hook\n"
        "heavy = {'msgspec', 'anyio', 'asyncio', 'structlog', 'json', 'typing', 're', 'argparse'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True, env=None
    )
    assert result.stdout.strip() == "[]"


def test_the_cli_loads_neither_the_daemon_nor_nats() -> None:
    code = (
        "import sys, gastown_client.cli\nprint(sorted({'gastownd', 'nats'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(*packages: str) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports, type-only and function-level imports
    included (a lazy import is still an edge). ``from pkg import name`` is an edge to
    ``pkg.name`` when that is a module (a package's ``__init__`` importing its own modules is
    no circle)."""
    paths = {
        module_name(path): path for package in packages for path in (SRC / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in paths else base)
            for target in targets:
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in order:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], order[nxt])
        if low[node] == order[node]:
            part: list[str] = []
            while True:
                member = stack.pop()
                part.append(member)
                if member == node:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return found


def test_the_source_imports_no_circle() -> None:
    """Across all of ``src/``, the daemon and the client, type-only and function-level imports
    included: parts are passed, not looked up, and the client package's ``__init__`` is imported
    by none of its own modules (they take ``__version__`` from ``gastown_client.version``)."""
    assert circles(import_graph("gastownd", "gastown_client")) == []


def test_an_import_inside_a_function_is_an_edge() -> None:
    graph = import_graph("gastownd", "gastown_client")
    # Imported only inside ``fitted``, when a payload needs cutting.
    assert "gastown_client.hooktrim" in graph["gastown_client.hookclient"]
    # Imported only under ``TYPE_CHECKING`` (the names are resolved lazily at run time).
    assert "gastown_client.client" in graph["gastown_client"]


def test_a_circle_is_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]


def test_no_two_modules_share_a_name() -> None:
    """A name says where a feature lives: one module per name across both packages."""
    seen: dict[str, list[str]] = {}
    for package in ("gastownd", "gastown_client"):
        for path in (SRC / package).rglob("*.py"):
            if path.name not in ("__init__.py", "__main__.py"):
                seen.setdefault(path.stem, []).append(module_name(path))
        for path in (SRC / package).rglob("__init__.py"):
            if path.parent != SRC / package:
                seen.setdefault(path.parent.name, []).append(module_name(path))
    shared = {stem: names for stem, names in seen.items() if len(names) > 1}
    assert shared == {}, shared


def test_no_two_public_classes_share_a_name() -> None:
    seen: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                seen.setdefault(node.name, []).append(module_name(path))
    shared = {name: found for name, found in seen.items() if len(found) > 1}
    assert shared == {}, shared


PARTS = {"eventlog", "subscriptions", "sessions", "server", "federation"}


def test_no_part_is_checked_for_none() -> None:
    """Parts are built before anything uses them: none is Optional, so none is asserted."""
    found = []
    for path in (SRC / "gastownd").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare) or not isinstance(node.ops[0], ast.IsNot):
                continue
            subject = node.left
            name = subject.id if isinstance(subject, ast.Name) else None
            if isinstance(subject, ast.Attribute) and isinstance(subject.value, ast.Name):
                # The daemon's or a part's own (a metrics snapshot's fields may be None).
                name = subject.attr if subject.value.id in ("daemon", "self") else None
            if name in PARTS and isinstance(node.comparators[0], ast.Constant):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert found == [], found
