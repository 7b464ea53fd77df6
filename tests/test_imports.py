"""Arrows one way: the import graph of ``skd/``, built from the source (AST), has no cycle, no pair
of packages importing each other and no function-level (deferred) import of an skd module.

``python tests/test_imports.py`` prints the graph (module -> the skd modules it imports) and the counts.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "skd"

#: What still fails and is being fixed by its owner (each entry with its owner), tolerated until then.
#: Empty: the pairs book <-> teachers and hints <-> teachers (BOOK) and the circle correlation <->
#: fused_relation in losses.functional (FORMULAS) were fixed before this test was committed.
KNOWN_UNTIL_FIXED: dict[str, list] = {"package pairs": [], "cycles": [], "deferred": []}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """``{dotted name: path}`` of every module of the package (a package is its ``__init__``)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool, known) -> list[str]:
    """The skd modules an import statement names: ``from pkg import name`` is ``pkg.name`` when
    that is a module, else ``pkg``."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in known]
    if node.level:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    found = []
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        if sub in known:
            found.append(sub)
        elif source in known:
            found.append(source)
    return found


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """``(graph, deferred)``: module -> the skd modules it imports; the ``(module, target)`` pairs
    imported inside a function."""
    known = modules(root)
    graph: dict[str, set[str]] = {name: set() for name in known}
    deferred = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        stack = [(tree, False)]
        while stack:
            node, in_function = stack.pop()
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, is_package, known):
                    if target == name:
                        continue
                    graph[name].add(target)
                    if in_function:
                        deferred.append((name, target))
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            stack.extend((child, inner) for child in ast.iter_child_nodes(node))
    return graph, sorted(set(deferred))


def package_of(module: str) -> str:
    """``skd.<first part>``: the package (or top-level module) a module belongs to."""
    return ".".join(module.split(".")[:2])


def package_pairs(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Pairs of packages that import each other (sorted names)."""
    arrows = {(package_of(a), package_of(b)) for a, targets in graph.items() for b in targets}
    return sorted({tuple(sorted(pair)) for pair in arrows
                   if pair[0] != pair[1] and pair[::-1] in arrows and "skd" not in pair})


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


# --------------------------------------------------------------------- the tests
def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The builder itself: absolute, relative and ``from pkg import module`` forms, and deferred ones."""
    pkg = tmp_path / "skd"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from skd.a.x import f\n")
    (pkg / "a" / "x.py").write_text("from . import y\n\ndef f():\n    import skd.b\n")
    (pkg / "a" / "y.py").write_text("from skd.a import x\n")
    (pkg / "b.py").write_text("from skd import a\nimport os\n")
    graph, deferred = import_graph(pkg)
    assert graph == {"skd": set(), "skd.a": {"skd.a.x"}, "skd.a.x": {"skd.a.y", "skd.b"},
                     "skd.a.y": {"skd.a.x"}, "skd.b": {"skd.a"}}
    assert deferred == [("skd.a.x", "skd.b")]
    assert cycles(graph) == [["skd.a", "skd.a.x", "skd.a.y", "skd.b"]]  # one circle: a.x -> b -> a -> a.x
    assert package_pairs(graph) == [("skd.a", "skd.b")]


def test_no_module_cycle():
    graph, _ = import_graph()
    assert [c for c in cycles(graph) if c not in KNOWN_UNTIL_FIXED["cycles"]] == []


def test_no_two_packages_import_each_other():
    graph, _ = import_graph()
    assert [p for p in package_pairs(graph) if p not in KNOWN_UNTIL_FIXED["package pairs"]] == []


def test_no_skd_module_is_imported_inside_a_function():
    _, deferred = import_graph()
    assert [d for d in deferred if d not in KNOWN_UNTIL_FIXED["deferred"]] == []


def main() -> int:
    graph, deferred = import_graph()
    for module in sorted(graph):
        print(f"{module} -> {', '.join(sorted(graph[module])) or '(none)'}")
    found_cycles, pairs = cycles(graph), package_pairs(graph)
    print()
    print(f"modules: {len(graph)}, arrows: {sum(len(t) for t in graph.values())}")
    print(f"cycles: {len(found_cycles)} {found_cycles}")
    print(f"package pairs importing each other: {len(pairs)} {pairs}")
    print(f"deferred (function-level) imports of skd modules: {len(deferred)} {deferred}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
