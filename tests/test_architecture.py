"""The package's shape holds: each subpackage imports only from the layers below it and
itself (never from a sibling of its layer), no modules import each other in a cycle, only
the store implementations speak SQL (each only its own driver), and production code has no
asserts."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bridge"
#: Bottom first. A package may import its own modules and those of lower layers.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"core"}),
    frozenset({"ingest", "host"}),
    frozenset({"store", "channels"}),
    frozenset({"alertmanager", "telemetry", "export", "feed", "config"}),
    frozenset({"workers"}),
    frozenset({"escalation"}),
    frozenset({"generate"}),
    frozenset({"http"}),
    frozenset({"cli"}),
    frozenset({"__main__"}),
)
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every bridge module `path` imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bridge.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module):
            for alias in node.names:  # `from bridge.x import y`: y may be a module
                child = f"{node.module}.{alias.name}"
                found.add(child if _exists(child) else str(node.module))
    return found


def _ours(module: str | None) -> bool:
    return module is not None and (module == "bridge" or module.startswith("bridge."))


def _exists(module: str) -> bool:
    path = ROOT.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def package_of(module: str) -> str | None:
    """The top-level subpackage (or module) of `bridge` a module belongs to; None: `bridge`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def test_every_package_has_a_layer() -> None:
    """A new subpackage must be placed in a layer before it can be used."""
    packages = {p for p in map(package_of, MODULES) if p is not None}
    assert packages <= set(LAYER_OF), sorted(packages - set(LAYER_OF))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    """Each module imports only from its own package and from lower layers."""
    own = package_of(module)
    if own is None:  # bridge/__init__.py: the version only
        assert imports(MODULES[module]) == set()
        return
    wrong = []
    for target in sorted(imports(MODULES[module])):
        other = package_of(target)
        if other is None or other == own:
            continue
        if LAYER_OF[other] >= LAYER_OF[own]:
            wrong.append(f"{target} (layer {LAYER_OF[other]}: {other})")
    assert not wrong, f"{module} (layer {LAYER_OF[own]}: {own}) imports upward or sideways: {wrong}"


def test_no_import_cycles() -> None:
    """No module reaches itself through the imports of the modules it imports."""
    graph = {m: {t for t in imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # Packages import their modules to re-export them: an edge into a package's __init__ from
    # one of its own modules would be a cycle, and is one.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, [*path, nxt]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if start not in state and visit(start, [start]):
            break
    assert not cycle, " -> ".join(cycle)


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The check itself: an upward import in a module is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from bridge.http.app import create_app\nimport bridge.core.errors\n")
    assert imports(bad) == {"bridge.http.app", "bridge.core.errors"}


#: Only each implementation talks to its database (the store interface is the way in).
DRIVERS = {
    "bridge.store.sqlite": {"sqlite3", "adbc_driver_sqlite", "adbc_driver_manager"},
    "bridge.store.postgres": {"asyncpg"},
}
#: SQL both implementations run as it is (text, no driver).
SHARED_SQL = {"bridge.store.sql"}
_SQL = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM|CREATE TABLE)\b")


def _external_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _implementation(module: str) -> str | None:
    return next((i for i in DRIVERS if module == i or module.startswith(i + ".")), None)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_sql_and_drivers_only_in_their_store(module: str) -> None:
    """Outside an implementation no module imports a database driver or holds SQL; inside
    one, only its own driver, and nothing of the other implementation."""
    path = MODULES[module]
    mine = _implementation(module)
    others = set().union(*(d for i, d in DRIVERS.items() if i != mine))
    assert not _external_imports(path) & others, module
    if mine is None and module not in SHARED_SQL:
        assert not _SQL.search(path.read_text()), f"{module} holds SQL"
    else:
        sideways = {m for m in imports(path) if _implementation(m) not in (None, mine)}
        assert not sideways, f"{module} imports the other implementation: {sideways}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_assert_in_production_code(module: str) -> None:
    """`python -O` drops asserts: production code raises explicit errors instead."""
    tree = ast.parse(MODULES[module].read_text())
    lines = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Assert)]
    assert not lines, f"{module}: assert on lines {lines}"


@pytest.mark.parametrize("module", ["bridge.cli", "bridge.http.app", "bridge.escalation.worker"])
def test_the_server_the_worker_and_the_cli_start_without_pyarrow(module: str) -> None:
    """pyarrow and numpy (100 ms and 50 MB, and OpenBLAS's thread) load for an export only:
    not in `serve`, its escalation worker, or an `ack` from the CLI."""
    code = f"import sys, {module}; print(sorted({{'pyarrow', 'numpy'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)  # fmt: skip
    assert out.stdout.strip() == "[]"


#: What does I/O (files, processes, sockets, the event loop): never imported by `core`.
IO_MODULES = frozenset({
    "os", "pathlib", "subprocess", "socket", "shutil", "tempfile", "asyncio", "aiohttp",
    "sqlite3", "asyncpg", "signal", "threading",
})  # fmt: skip


@pytest.mark.parametrize("module", sorted(m for m in MODULES if package_of(m) == "core"))
def test_core_does_no_io(module: str) -> None:
    """`core` is the vocabulary, with no I/O (what touches the machine is bridge.host): it
    imports no module that reads files, runs processes, opens sockets or runs an event loop."""
    tree = ast.parse(MODULES[module].read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}  # fmt: skip
    imported |= {str(node.module).split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.level == 0}  # fmt: skip
    assert not imported & IO_MODULES, (module, sorted(imported & IO_MODULES))


#: Where the environment is read: the settings (and `dev`, which builds its children's).
READS_ENVIRONMENT = frozenset({"bridge.config", "bridge.cli.dev"})


@pytest.mark.parametrize("module", sorted(MODULES))
def test_settings_are_read_only_through_settings(module: str) -> None:
    """No module but the settings reads os.environ or os.getenv: a setting read elsewhere is
    one an operator cannot find in the configuration's reference."""
    tree = ast.parse(MODULES[module].read_text())
    reads = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Attribute)
             and node.attr in ("environ", "getenv") and isinstance(node.value, ast.Name)
             and node.value.id == "os"]  # fmt: skip
    assert not reads or module in READS_ENVIRONMENT, (module, reads)
