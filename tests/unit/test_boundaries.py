"""The layout's import rules (STYLE.md section 3), checked rather than reviewed."""

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
                assert module.startswith(("gastownd.core", "gastownd.errors")), module
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


def test_core_modules_import_no_circle() -> None:
    """Type-only imports count too: a circle makes the modules hard to tell apart."""
    core = SRC / "gastownd" / "core"
    graph = {
        path.stem: {
            module.rsplit(".", 1)[-1]
            for module in imported_modules(path)
            if module.startswith("gastownd.core.")
        }
        for path in core.glob("*.py")
    }

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    circular = sorted(name for name in graph if reaches(name, name, {name}))
    assert circular == [], circular
