"""The package's import graph: no circle among the stack, the boundary and the capabilities.

Every import counts, at module level, inside functions and under ``TYPE_CHECKING``
alike: a circle that only type checking sees is still two packages that cannot be
understood (or moved) one without the other. Modules are grouped by their first
component under ``bastion`` (``bastion.ratelimit.stores.redis`` is ``ratelimit``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import bastion

PACKAGE = Path(bastion.__file__).parent
#: The parts that must form no circle with each other (directly or through any other part).
GUARDED = {"stack", "boundary", "idempotency", "ratelimit", "validation", "routing", "clients"}


def component(module: str) -> str | None:
    """``bastion.x.y`` -> ``x``; ``None`` outside the package and for the package root."""
    parts = module.split(".")
    if parts[0] != "bastion" or len(parts) < 2:
        return None
    return parts[1]


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from bastion import stack`` imports the module bastion.stack.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        source = component(module_name(path)) or "__init__"
        targets = edges.setdefault(source, set())
        for imported in imports_of(path):
            target = component(imported)
            if target is None or target == source:
                continue
            # The package root is imported before any module of it, by every module alike:
            # an edge to it says nothing (``from bastion import normalize`` imports ``normalize``).
            if (PACKAGE / target).is_dir() or (PACKAGE / f"{target}.py").exists():
                targets.add(target)
    return edges


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the graph's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.add(member)
                if member == node:
                    break
            found.append(members)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def path_between(edges: dict[str, set[str]], start: str, goal: str) -> list[str]:
    """A shortest import path from ``start`` to ``goal`` (for the failure message)."""
    frontier = [[start]]
    seen = {start}
    while frontier:
        path = frontier.pop(0)
        for target in sorted(edges.get(path[-1], ())):
            if target == goal:
                return [*path, target]
            if target not in seen:
                seen.add(target)
                frontier.append([*path, target])
    return []


def test_no_import_circle_among_the_stack_the_boundary_and_the_capabilities() -> None:
    edges = graph()
    assert set(edges) >= GUARDED, sorted(GUARDED - set(edges))
    circles = []
    for members in strongly_connected(edges):
        guarded = sorted(members & GUARDED)
        if len(guarded) >= 2:
            a, b = guarded[:2]
            circles.append(" -> ".join(path_between(edges, a, b) + path_between(edges, b, a)[1:]))
    assert not circles, "import circles: " + "; ".join(circles)


def test_the_walk_finds_a_circle_when_there_is_one() -> None:
    edges = {"stack": {"ratelimit"}, "ratelimit": {"config"}, "config": {"stack"}, "boundary": set()}
    circles = [m for m in strongly_connected(edges) if len(m & GUARDED) >= 2]
    assert circles == [{"stack", "ratelimit", "config"}]
    assert path_between(edges, "stack", "config") == ["stack", "ratelimit", "config"]


def test_capability_builders_receive_the_guard_context_not_bastion() -> None:
    for package in ("idempotency", "ratelimit", "validation", "routing"):
        for path in (PACKAGE / package).rglob("*.py"):
            assert "bastion.stack" not in imports_of(path), path
    assert "bastion.stack" not in imports_of(PACKAGE / "clients.py")
