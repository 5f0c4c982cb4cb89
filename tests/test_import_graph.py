"""The package's import graph, read with ast (nothing imported): no cycles, and no module takes a
`_private` name from another lmjax module."""
import ast
import os

from tests.helpers import REPO

PACKAGE = os.path.join(REPO, "lmjax")


def module_files():
    mods = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                mods[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = path
    return mods


def imports_of(module, path, mods):
    """(imported lmjax module, imported name or None) for every import statement in `path`."""
    is_package = path.endswith("__init__.py")
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                yield (full, None) if full in mods else (base, alias.name)


def graph():
    mods = module_files()
    edges, private = {m: set() for m in mods}, []
    for module, path in mods.items():
        for target, name in imports_of(module, path, mods):
            while target and target not in mods:
                target = target.rpartition(".")[0]
            if target and target != module:
                edges[module].add(target)
                if name and name.startswith("_") and not name.startswith("__"):
                    private.append(f"{module} imports {name} from {target}")
    return edges, private


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lmjax_has_no_import_cycle_and_no_private_imports():
    edges, private = graph()
    assert len(edges) > 40  # the walk found the package
    assert cycles(edges) == []
    assert private == []


def test_tests_and_benchmarks_import_no_private_lmjax_names():
    offenders = []
    for folder in ("tests", "benchmarks", "launch"):
        for directory, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                tree = ast.parse(open(os.path.join(directory, name)).read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lmjax"):
                        offenders += [f"{name}: {a.name} from {node.module}" for a in node.names
                                      if a.name.startswith("_") and not a.name.startswith("__")]
    assert offenders == []
