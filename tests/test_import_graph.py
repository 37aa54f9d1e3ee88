"""The packages depend on each other one way: no import cycle, and every import points down the layers of
``LAYERS`` (issue 33).

The graph is built from the source with ``ast``, not by importing anything: one node per module, one edge per
module another imports, whether at the top of the file or inside a function (an import deferred into a function is
still a dependency; it only hides a cycle from the interpreter). Importing ``a.b.c`` also runs the ``__init__`` of
the packages ``a`` and ``a.b``, so it is an edge to those too, unless the importer is inside them (their
``__init__`` has run already).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sdft", "data_prep", "eval", "experiments", "figures")

# The layers, lowest first. A module belongs to the layer of the longest prefix below that names it; a module may
# import from the layers of its row in ALLOWED only. ``sdft`` is split: its core (losses, prompts, sequences,
# models, the run files, the plugin registry ...) is below the task data, its training and configuration are
# above the evaluation (they run validation evaluations during training).
LAYERS = {
    "sdft": "core",
    "data_prep": "data_prep",
    "eval": "eval",
    **dict.fromkeys((
        "sdft._cli", "sdft.baselines", "sdft.config", "sdft.method", "sdft.plan", "sdft.registry",
        "sdft.self_distillation", "sdft.selection", "sdft.speedups", "sdft.train", "sdft.trainer", "sdft.training",
        "sdft.validation",
    ), "training"),
    "figures": "figures",
    "experiments": "experiments",
}
#   layer          may import
ALLOWED = {
    "core":        {"core"},
    "data_prep":   {"core", "data_prep"},
    "eval":        {"core", "data_prep", "eval"},
    "training":    {"core", "data_prep", "eval", "training"},
    "figures":     {"core", "figures"},  # rows, titles and styles come in as arguments
    "experiments": {"core", "data_prep", "eval", "training", "figures", "experiments"},
}


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` file under the packages (``__init__.py`` is the
    package itself)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _known_prefix(name: str, modules) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (``a.b.func`` -> ``a.b``); None outside them."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names one import can load: ``from a import b`` may load the module ``a.b`` or take the name
    ``b`` of ``a``; ``importlib.import_module("a.b")`` with a literal name loads ``a.b``. Other nodes: none."""
    if isinstance(node, ast.Call):
        func = node.func
        named = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        literal = node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
        return [node.args[0].value] if named == "import_module" and literal else []
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def import_edges(root: Path, packages=PACKAGES) -> dict[str, dict[str, int]]:
    """Module -> {imported module: line of the first import}, the modules of ``packages`` only; imports at module
    level and inside functions alike, ``importlib.import_module`` of a literal name, and the packages whose
    ``__init__`` an import runs."""
    modules = module_files(root, packages)
    edges: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        own = {name.rsplit(".", i)[0] for i in range(name.count(".") + 1)}  # the importer and its packages
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom, ast.Call)):
                continue
            for dotted in _imported_names(node, name, is_package):
                target = _known_prefix(dotted, modules)
                if target is None:
                    continue
                parts = target.split(".")
                for i in range(1, len(parts) + 1):
                    step = ".".join(parts[:i])
                    if step in modules and step not in own:
                        edges[name].setdefault(step, node.lineno)
    return edges


def strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one that imports itself (Tarjan's
    algorithm): each a sorted list of modules, the components in name order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:  # recursion depth: the longest import chain (tens)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, {})):
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
            if len(component) > 1 or v in edges.get(v, {}):
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(components)


def find_cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle per strongly connected component, a path ``[a, b, ..., a]`` through its first module."""
    return [_cycle_through(c, set(c), edges) for c in strongly_connected(edges)]


def _cycle_through(component: list[str], members: set[str], edges) -> list[str]:
    """A shortest cycle through the component's first module, inside the component (breadth-first)."""
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges.get(v, {})):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if v != start else [start, start]
                if w in members and w not in parents:
                    parents[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected component always has one


def _describe(cycle: list[str], edges) -> str:
    return " -> ".join(f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def layer_of(module: str) -> str:
    return LAYERS[_known_prefix(module, LAYERS)]


# ------------------------------------------------------------------------------------------------ the repository
def test_the_packages_import_each_other_without_a_cycle():
    edges = import_edges(ROOT)
    assert len(edges) > 100  # every package was read
    components = strongly_connected(edges)
    assert not components, "import cycles:\n" + "\n".join(
        f"{_describe(_cycle_through(c, set(c), edges), edges)}\n  (the modules of this cycle: {', '.join(c)})"
        for c in components)


def test_every_import_points_down_the_layers():
    edges = import_edges(ROOT)
    wrong = [f"{a} (line {line}, layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
             for a, targets in sorted(edges.items()) for b, line in sorted(targets.items())
             if layer_of(b) not in ALLOWED[layer_of(a)]]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_every_module_has_a_layer_and_every_layer_a_row():
    assert set(LAYERS.values()) == set(ALLOWED)
    assert all(layer in allowed for layer, allowed in ALLOWED.items())  # a layer imports itself
    assert {layer_of(m) for m in import_edges(ROOT)} == set(ALLOWED)


def test_the_package_inits_import_nothing_for_a_side_effect():
    """``SDFT_OMP_PASSIVE`` is read by ``sdft/__init__``; the other packages no longer import ``sdft`` for it."""
    for package in PACKAGES[1:]:
        tree = ast.parse((ROOT / package / "__init__.py").read_text())
        bare = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import)]
        assert not bare, f"{package}/__init__.py: {bare}"


# ------------------------------------------------------------------------------------------------ the detector
def _package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_detector_names_a_cycle_hidden_in_a_function(tmp_path):
    _package(tmp_path, {
        "toy/__init__.py": "",
        "toy/low.py": "import json\n\n\ndef f():\n    from toy.high import g\n    return g\n",
        "toy/mid.py": "from toy import low\n",
        "toy/high.py": "from . import mid\n\n\ndef g():\n    return 1\n",
        "toy/leaf.py": "from toy.mid import low\n",
    })
    edges = import_edges(tmp_path, ("toy",))
    assert edges["toy.low"] == {"toy.high": 5}
    assert edges["toy.high"] == {"toy.mid": 1}  # a relative import
    assert edges["toy.leaf"] == {"toy.mid": 1}  # ``low`` is a name of toy.mid there
    cycles = find_cycles(edges)
    assert cycles == [["toy.high", "toy.mid", "toy.low", "toy.high"]]
    assert _describe(cycles[0], edges) == ("toy.high (line 1) -> toy.mid (line 1) -> toy.low (line 5) -> toy.high")


def test_the_detector_counts_a_package_init_and_passes_an_acyclic_package(tmp_path):
    _package(tmp_path, {
        "a/__init__.py": "from a.core import x\n",
        "a/core.py": "x = 1\n",
        "a/user.py": "from a.core import x\n",
        "b/__init__.py": "",
        "b/tool.py": "import a.user\n",
    })
    edges = import_edges(tmp_path, ("a", "b"))
    assert edges["b.tool"] == {"a": 1, "a.user": 1}  # a/__init__.py runs first
    assert edges["a.user"] == {"a.core": 1}  # its own package's __init__ has run already
    assert find_cycles(edges) == []
    _package(tmp_path, {"a/core.py": "def f():\n    import b.tool\n"})
    assert find_cycles(import_edges(tmp_path, ("a", "b"))) == [["a", "a.core", "b.tool", "a"]]


@pytest.mark.parametrize("module, layer", [("sdft.losses", "core"), ("sdft.baselines.sft", "training"),
                                           ("eval.lm_eval_tasks.utils", "eval"), ("figures.curves", "figures")])
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_the_detector_reads_a_literal_import_module(tmp_path):
    _package(tmp_path, {
        "p/__init__.py": "",
        "p/registry.py": "import importlib\n\n\ndef load():\n    importlib.import_module('p.entry')\n",
        "p/entry.py": "from p.registry import load\n",
    })
    edges = import_edges(tmp_path, ("p",))
    assert edges["p.registry"] == {"p.entry": 5}
    assert strongly_connected(edges) == [["p.entry", "p.registry"]]
