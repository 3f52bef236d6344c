"""rcc's modules form layers: each imports only from its own layer or below, and nothing imports in a circle.

The import graph is read from the source (``ast``), so it includes imports made
inside functions (a lazy import still ties two modules together) and relative
imports; only imports under ``if TYPE_CHECKING:`` are exempt.  The layers,
bottom to top, follow the data: randomness -> targets -> kernels -> coders ->
message coding -> compression -> adapters -> tools.
"""

from __future__ import annotations

import ast
import fnmatch
import pathlib

import pytest

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent / "rcc"

#: (pattern, layer), first match wins.  Layer 3 (the coders) is ordered inside
#: itself: the shared checks and results at 3.0, the coders at 3.1, and
#: rcc.coding, which dispatches ``method=`` to the others, at 3.2.
LAYERS = (
    ("rcc.random", 0), ("rcc.compilation", 0), ("rcc.testing", 0),
    ("rcc.targets", 1), ("rcc.targets.*", 1),
    ("rcc.axis_kernels", 2), ("rcc.kernels", 2), ("rcc.kernels.*", 2),
    ("rcc.checks", 3.0), ("rcc.encoded", 3.0), ("rcc.transform", 3.0), ("rcc.race_inputs", 3.0),
    ("rcc.samplers.kernels", 2),
    ("rcc.general", 3.1), ("rcc.samplers.core", 3.1),
    # the package itself re-exports the sampler message codes, so it sits with them
    ("rcc.samplers.messages", 4), ("rcc.samplers", 4), ("rcc.samplers.*", 3.1),
    ("rcc.coding", 3.2),
    ("rcc.entropy", 4), ("rcc.entropy.*", 4),
    ("rcc.compression", 5),
    ("rcc.torch", 6), ("rcc.torch.*", 6), ("rcc.dask", 6),
    ("rcc.bench", 7), ("rcc.demo", 7), ("rcc.warmup", 7), ("rcc", 7), ("rcc.__main__", 7),
)


def layer_of(module, layers=LAYERS):
    """The layer of ``module`` (first matching pattern), or None if no pattern matches."""
    for pattern, layer in layers:
        if fnmatch.fnmatchcase(module, pattern):
            return layer
    return None


def module_files(package_dir):
    """``{module name: path}`` of every module under ``package_dir`` (a package named after the directory)."""
    root = package_dir.parent
    modules = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test):
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree):
    """Every Import/ImportFrom in ``tree`` (functions included), except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(module, path, modules):
    """The package-internal modules that ``module`` (source at ``path``) imports, with the line of each."""
    top = module.split(".")[0]
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    found = {}
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module
            # ``from base import name`` imports the module base.name where one exists, else base itself.
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                          for alias in node.names]
        for name in candidates:
            if name != top and not name.startswith(top + "."):
                continue
            while name not in modules and "." in name:  # ``import rcc.a.b`` of an attribute: its module
                name = name.rpartition(".")[0]
            if name in modules and name != module:
                found[name] = min(found.get(name, node.lineno), node.lineno)  # its first import
    return found


def import_graph(package_dir=PACKAGE_DIR):
    """``{module: {imported module: line}}`` for every module under ``package_dir``."""
    modules = module_files(package_dir)
    return {module: imports_of(module, path, modules) for module, path in modules.items()}


def find_cycles(graph):
    """One import cycle (a list of modules, first repeated last) per strongly connected component that has one."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(start):
        # Iterative Tarjan: (node, iterator over its successors).
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
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
                        components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        # A shortest path back to the component's first member, inside the component.
        start = min(component)
        paths, frontier = {start: [start]}, [start]
        cycle = None
        while frontier and cycle is None:
            following = []
            for node in frontier:
                for successor in sorted(graph[node]):
                    if successor == start:
                        cycle = paths[node] + [start]
                        break
                    if successor in component and successor not in paths:
                        paths[successor] = paths[node] + [successor]
                        following.append(successor)
                if cycle:
                    break
            frontier = following
        cycles.append(cycle)
    return sorted(cycles)


def layer_violations(graph, layers=LAYERS):
    """``(importer, its layer, imported, its layer, line)`` for every import of a higher layer."""
    bad = []
    for module, imported in sorted(graph.items()):
        for name, line in sorted(imported.items()):
            mine, theirs = layer_of(module, layers), layer_of(name, layers)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append((module, mine, name, theirs, line))
    return bad


def _describe_cycle(graph, cycle):
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


# --------------------------------------------------------------------------- the package itself


def test_every_module_has_a_layer():
    missing = sorted(module for module in module_files(PACKAGE_DIR) if layer_of(module) is None)
    assert not missing, (f"modules missing from the layer table LAYERS in {__file__}: {missing}; "
                         "add each with the layer it belongs to")


def test_no_import_cycles():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(
        _describe_cycle(graph, cycle) for cycle in cycles)


def test_no_module_imports_from_a_higher_layer():
    bad = layer_violations(import_graph())
    assert not bad, "imports of a higher layer:\n" + "\n".join(
        f"{module} (layer {mine}) imports {name} (layer {theirs}) at line {line}"
        for module, mine, name, theirs, line in bad)


# --------------------------------------------------------------------------- the checker on known trees


def _write_package(tmp_path, files):
    package = tmp_path / "pkg"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_checker_sees_lazy_and_relative_imports_and_exempts_type_checking(tmp_path):
    package = _write_package(tmp_path, {
        "__init__.py": "from .low import thing\n",
        "low.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import Thing\n"
                   "def thing():\n    from . import middle\n"),
        "middle.py": "import os\nfrom .sub.deep import value\n",
        "high.py": "from pkg import low\n",
        "sub/__init__.py": "",
        "sub/deep.py": "from .. import low\nfrom ..middle import os\nvalue = 1\n",
    })
    graph = import_graph(package)
    assert graph["pkg"] == {"pkg.low": 1}
    assert graph["pkg.low"] == {"pkg.middle": 5}  # the lazy import counts, the TYPE_CHECKING one does not
    assert graph["pkg.middle"] == {"pkg.sub.deep": 2}
    assert graph["pkg.sub.deep"] == {"pkg.low": 1, "pkg.middle": 2}
    assert graph["pkg.high"] == {"pkg.low": 1}
    assert find_cycles(graph) == [["pkg.low", "pkg.middle", "pkg.sub.deep", "pkg.low"]]


def test_checker_flags_an_import_of_a_higher_layer_and_an_unlisted_module(tmp_path):
    package = _write_package(tmp_path, {"__init__.py": "", "base.py": "def f():\n    from .top import g\n",
                                        "top.py": "from .base import f\n", "extra.py": ""})
    layers = (("pkg", 9), ("pkg.base", 0), ("pkg.top", 1))
    graph = import_graph(package)
    assert layer_violations(graph, layers) == [("pkg.base", 0, "pkg.top", 1, 2)]
    assert layer_of("pkg.extra", layers) is None
    assert find_cycles(graph) == [["pkg.base", "pkg.top", "pkg.base"]]


@pytest.mark.parametrize("module, layer", [
    ("rcc.entropy.index_codes", 4), ("rcc.entropy.bucket_codes", 4), ("rcc.samplers.messages", 4), ("rcc.samplers.astar", 3.1), ("rcc.samplers.kernels", 2),
    ("rcc.torch.channel", 6), ("rcc.targets.general", 1), ("rcc", 7), ("rcc.coding", 3.2),
])
def test_subpackages_map_to_their_layers(module, layer):
    assert layer_of(module) == layer
