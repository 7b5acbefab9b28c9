"""The import graph of the first-party packages, read from the source: no module imports
itself through others, the runtime (grpckit) imports nothing built on it (services, client, docgen),
and the runtime's rooms import one way, each only from the rooms after it in ROOMS.

Read with ast rather than by importing, so that imports under `if TYPE_CHECKING:` (which
Python never runs) count as edges too: a circle kept only for the type checker is one.
"""

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("grpckit", "cheese", "movie", "soccer", "client", "docgen")
# Everything built on the runtime: the services, the client, the docs' generator.
ABOVE_RUNTIME = frozenset(PACKAGES) - {"grpckit"}
Graph = dict[str, set[str]]
# The runtime's rooms, each importing only from those after it: a call's jobs may log and
# count, but telemetry knows nothing of calls; the server wraps calls, never the reverse.
ROOMS = (
    "grpckit.lifecycle",
    "grpckit.calls",
    "grpckit.client",
    "grpckit.transport",
    "grpckit.telemetry",
)
# Below every room, importable from any of them; they import no room themselves.
SHARED = frozenset({"grpckit", "grpckit.settings", "grpckit.config"})


def _module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(tree: ast.Module, module: str, is_package: bool) -> Iterator[str]:
    """Every module name `tree` imports, relative imports resolved against `module`."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base
            # `from pkg import name` imports the module pkg.name when there is one.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(root: Path, packages: tuple[str, ...]) -> Graph:
    """Module -> the first-party modules it imports, for every module of `packages`."""
    files = {_module_name(root, f): f for p in packages for f in (root / p).rglob("*.py")}
    graph: Graph = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        names = _imported(tree, module, path.name == "__init__.py")
        graph[module] = {name for name in names if name in files and name != module}
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One circle for each strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_first_party_module_imports_in_a_circle() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert {
        "soccer.hub",
        "soccer.metrics",
        "soccer.video",
        "grpckit.lifecycle.server",
    } <= graph.keys()
    assert cycles(graph) == []


def test_the_runtime_imports_nothing_above_it() -> None:
    graph = import_graph(ROOT, PACKAGES)
    upward = {
        (module, name)
        for module, names in graph.items()
        if module.partition(".")[0] == "grpckit"
        for name in names
        if name.partition(".")[0] in ABOVE_RUNTIME
    }
    assert upward == set()


def _room(module: str, rooms: tuple[str, ...]) -> int | None:
    inside = (i for i, room in enumerate(rooms) if module == room or module.startswith(f"{room}."))
    return next(inside, None)


def against_the_order(graph: Graph, rooms: tuple[str, ...], shared: frozenset[str]) -> Graph:
    """Module -> what it imports against the order: a room before its own (or any room, for a
    shared module), or a module of the runtime that is in neither a room nor `shared`."""
    runtime = rooms[0].partition(".")[0]
    found: Graph = {}
    for module, names in graph.items():
        if module.partition(".")[0] != runtime:
            continue
        own = _room(module, rooms)
        for name in names:
            if name.partition(".")[0] != runtime:
                continue
            theirs = _room(name, rooms)
            allowed = name in shared if theirs is None else own is not None and theirs >= own
            if not allowed:
                found.setdefault(module, set()).add(name)
    return found


def test_every_runtime_module_is_in_a_room_or_shared() -> None:
    graph = import_graph(ROOT, PACKAGES)
    runtime = {module for module in graph if module.partition(".")[0] == "grpckit"}
    placed = {m for m in runtime if _room(m, ROOMS) is not None or m in SHARED}
    assert runtime - placed == set()
    assert all(room in graph for room in ROOMS)


def test_the_rooms_import_one_way_in_their_order() -> None:
    graph = import_graph(ROOT, PACKAGES)
    assert against_the_order(graph, ROOMS, SHARED) == {}


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_a_circle_through_a_type_checking_import_is_found(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg import b\n",
            "pkg/b.py": "from .c import thing\n",
            "pkg/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
            "pkg/d.py": "from pkg import a\n",
        },
    )
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.b"] == {"pkg.c"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_circle_is_reported_for_a_chain(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "import pkg.b\n",
            "pkg/b.py": "from pkg.c import thing\n",
            "pkg/c.py": "import os\n",
        },
    )
    graph = import_graph(tmp_path, ("pkg",))
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": set()}
    assert cycles(graph) == []


def test_an_import_against_the_rooms_order_is_found(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "rt/__init__.py": "",
            "rt/base.py": "from rt.low import x\n",
            "rt/high/__init__.py": "",
            "rt/high/a.py": "from rt import base, stray\n",
            "rt/low/__init__.py": "",
            "rt/low/b.py": "from rt.low import c\n",
            "rt/low/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from rt.high import a\n",
            "rt/stray.py": "import os\n",
        },
    )
    graph = import_graph(tmp_path, ("rt",))
    found = against_the_order(graph, ("rt.high", "rt.low"), frozenset({"rt", "rt.base"}))
    # No circle, yet low imports high (for the type checker only), a shared module imports a
    # room, and a module sits in no room.
    assert cycles(graph) == []
    assert found == {
        "rt.low.c": {"rt.high", "rt.high.a"},
        "rt.base": {"rt.low"},
        "rt.high.a": {"rt.stray"},
    }
