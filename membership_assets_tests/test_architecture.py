"""The package's layers, measured on its import graph (imports inside functions included).

Bottom to top: the stdlib-only ``settings``; foundations (typed-settings base, privacy, run tags,
limits, scratch, connectors); each domain's logic, clients, stores and the resources wrapping
them; its typed settings, which build those resources; its assets, jobs, schedules, sensors and
checks; its definitions (and the preflight, the simulators); the root (``definitions``, the CLI). A module imports only its own layer or below, and no import
closes a cycle, so a newcomer can read any module knowing only what lies beneath it.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "membership_assets"
ROOT_NAME = "membership_assets"

FOUNDATION = {
    "columns",
    "config",
    "privacy",
    "run_tags",
    "pools",
    "limits",
    "metadata",
    "scratch",
    "connectors",
}
ORCHESTRATION = {
    "assets",
    "repair_assets",
    "automation",
    "schedules",
    "sensors",
    "event_sensor",
    "freshness",
    "recovery",
    "refusal_alerts",
}
LAYERS = ("settings", "foundation", "domain", "domain settings", "orchestration", "definitions", "root")


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:  # Alembic's scripts are loaded by Alembic, not imported
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports, anywhere in its body."""
    modules = module_names()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # `from . import x` names the module x, not the package (its __init__).
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                candidates = submodules or [target]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            graph[module] |= {c for c in candidates if c in modules and c != module}
    return graph


def layer(module: str) -> int:
    parts = module.split(".")[1:]
    if not parts or parts[0] in ("definitions", "__main__", "config_reference"):
        return LAYERS.index("root")
    if parts == ["settings"]:
        return LAYERS.index("settings")
    if parts[0] in FOUNDATION:
        return LAYERS.index("foundation")
    if parts[0] in ("preflight", "simulators"):
        return LAYERS.index("definitions")
    leaf = parts[-1] if len(parts) > 1 else ""
    if leaf == "definitions":
        return LAYERS.index("definitions")
    if leaf in ORCHESTRATION:
        return LAYERS.index("orchestration")
    if leaf == "settings":
        return LAYERS.index("domain settings")
    return LAYERS.index("domain")  # logic, clients, stores and the resources wrapping them


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert len(graph) > 80
    assert "membership_assets.registry.store" in graph["membership_assets.registry.resources"]
    # Imports inside functions count: the CLI imports its commands' modules lazily.
    assert "membership_assets.registry.settings" in graph["membership_assets.__main__"]


def test_no_import_cycles_even_through_imports_inside_functions():
    assert not cycles(import_graph())


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{m} ({LAYERS[layer(m)]}) imports {t} ({LAYERS[layer(t)]})"
        for m, targets in sorted(import_graph().items())
        for t in sorted(targets)
        if layer(t) > layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_the_settings_module_at_the_bottom_is_standard_library_only():
    tree = ast.parse((PACKAGE / "settings.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {
        (n.module or "").split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and not n.level
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]


def test_only_the_entry_points_import_the_definitions_root():
    graph = import_graph()
    importers = {m for m, targets in graph.items() if "membership_assets.definitions" in targets}
    assert importers <= {"membership_assets.__main__"}
    assert not (PACKAGE / "environment.py").exists(), "each domain's settings build its resources"
