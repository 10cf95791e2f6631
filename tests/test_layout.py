"""The house: artdate's modules import each other without a cycle (lazy imports inside functions count)."""

import ast
import os

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "artdate")


def imports_of(path: str) -> set[str]:
    """The artdate modules a module imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("artdate."):
            found.add(node.module.split(".")[1])
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for other in sorted(graph.get(module, ())):
            if state.get(other) == "open":
                return path[path.index(other) :] + [other] if other in path else [module, other]
            if other not in state and (cycle := visit(other, path + [other])):
                return cycle
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [module])):
            return cycle
    return None


def test_no_import_cycle_between_artdate_modules():
    graph = {name[:-3]: imports_of(os.path.join(PACKAGE, name)) for name in os.listdir(PACKAGE) if name.endswith(".py")}
    assert graph["metadata"] >= {"catalog", "works"}  # the graph is read: metadata builds on both
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_a_cycle_is_found():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
