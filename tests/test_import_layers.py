"""Imports only go down: the packages form layers; no module imports one above it, forms a loop, or takes private names.

The layers, top to bottom (a module may import its own layer and any layer below it)::

    napari_segarch > cli > batch > training > prompts > instances > tiling > models/preprocessing
        > nets > backbones > blocks/layers > zoo
        > io/synthetic/samples/satellite/destinations/axes/devices/arrays/deprecation

Every ``import`` counts, function-local ones too (they are real dependencies, only deferred). The
package root ``segarch`` is a lazy facade: ``import segarch`` followed by ``segarch.train`` is an
import of :mod:`segarch.training.loop`, read from the facade's ``_LAZY`` table.

This is a plain ``ast`` walk of the source: nothing is imported, so it runs in a fraction of a second.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = (REPO / "src" / "segarch", REPO / "napari_segarch")
#: Scripts that use the engine: no layer, but they too use public names only.
TOOLS = (REPO / "benchmarks", REPO / "scripts")

#: Top to bottom. A new top-level module of ``segarch`` must be placed here (the test says so).
LAYERS: list[tuple[str, ...]] = [
    ("napari_segarch",),
    ("segarch.cli",),
    ("segarch.batch",),
    ("segarch.training",),
    ("segarch.prompts",),
    ("segarch.inference",),
    ("segarch.instances",),
    ("segarch.tiling", "segarch.runtimes"),
    ("segarch.models", "segarch.preprocessing", "segarch.model", "segarch.model_file", "segarch.pretrained"),
    ("segarch.nets",),
    ("segarch.backbones",),
    ("segarch.blocks", "segarch.layers"),
    ("segarch.zoo",),
    ("segarch.io", "segarch.synthetic", "segarch.samples", "segarch.satellite", "segarch.destinations",
     "segarch.axes", "segarch.devices", "segarch.arrays", "segarch.deprecation"),
]

#: Known upward edges ``(importer, imported)``: none today. An entry here must say which change removes it;
#: one that no longer occurs must be deleted (the test says so).
KNOWN_UPWARD: set[tuple[str, str]] = set()
#: Known import loops (sets of modules): none. The last two (``model_file`` <-> ``pretrained``,
#: ``tiling.engine`` <-> ``tiling.distributed``) went with issue 15 (the models package; the pipeline module).
KNOWN_LOOPS: list[frozenset[str]] = []


def _module_name(path: Path) -> str:
    root = REPO / "src" if path.is_relative_to(REPO / "src") else REPO
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(roots=SOURCES) -> dict[str, Path]:
    return {_module_name(p): p for root in roots for p in sorted(root.rglob("*.py"))}


def _lazy_table(modules: dict[str, Path]) -> dict[str, str]:
    """The facade's ``_LAZY``: attribute of ``segarch`` → the module it loads."""
    tree = ast.parse(modules["segarch"].read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_LAZY" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {name: module for name, (module, _attr) in table.items()}
    raise AssertionError("segarch/__init__.py has no _LAZY table")


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return name in modules and modules[name].name == "__init__.py"


def _imports(name: str, path: Path, modules: dict[str, Path], lazy: dict[str, str]):
    """``(line, imported module, imported names)`` for every import of a project module in ``path``."""
    tree = ast.parse(path.read_text())
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    found = []

    def target(module: str, attr: str | None) -> str:
        if module == "segarch" and attr in lazy:
            return lazy[attr]
        if attr and f"{module}.{attr}" in modules:
            return f"{module}.{attr}"  # ``from package import submodule``
        return module

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in ("segarch", "napari_segarch") and alias.name != "segarch":
                    found.append((node.lineno, alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] not in ("segarch", "napari_segarch"):
                continue
            for alias in node.names:
                found.append((node.lineno, target(module, alias.name), (alias.name,)))
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "segarch":
            # ``import segarch`` then ``segarch.train(...)``: the facade loads the module on first use.
            if node.attr in lazy or f"segarch.{node.attr}" in modules:
                found.append((node.lineno, target("segarch", node.attr), ()))
    return found


def _layer(module: str) -> int | None:
    best = None
    for index, members in enumerate(LAYERS):
        for prefix in members:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    return None if best is None else best[0]


def _top_package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "segarch" else parts[0]


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    lazy = _lazy_table(modules)
    edges = {name: _imports(name, path, modules, lazy) for name, path in modules.items()}
    tools = {name: _imports(name, path, modules, lazy) for name, path in _modules(TOOLS).items()}
    return modules, edges, tools


def test_every_module_has_a_layer(graph):
    modules, _, _ = graph
    unplaced = sorted(m for m in modules if m != "segarch" and _layer(m) is None)
    assert not unplaced, f"place these modules in LAYERS of {Path(__file__).name}: {unplaced}"


def test_imports_only_go_down(graph):
    modules, edges, _ = graph
    upward, seen = [], set()
    for importer, imports in edges.items():
        for line, imported, _names in imports:
            if imported == "segarch" or importer == "segarch":
                continue  # the facade itself (its __version__, its lazy table)
            low, high = _layer(importer), _layer(imported)
            if high is not None and low is not None and high < low:
                if (importer, imported) in KNOWN_UPWARD:
                    seen.add((importer, imported))
                    continue
                upward.append(f"{importer}:{line} imports {imported} (layer {LAYERS[high]} is above "
                              f"{LAYERS[low]})")
    assert not upward, "imports going up:\n" + "\n".join(upward)
    stale = KNOWN_UPWARD - seen
    assert not stale, f"these known exceptions no longer occur: delete them from KNOWN_UPWARD: {sorted(stale)}"


def test_no_import_loops(graph):
    _, edges, _ = graph
    adjacency = defaultdict(set)
    for importer, imports in edges.items():
        for _line, imported, _names in imports:
            if imported != importer and imported in edges and imported != "segarch" and importer != "segarch":
                adjacency[importer].add(imported)
    # Tarjan's strongly connected components: every component of two or more modules is a loop.
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacency[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(frozenset(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    new = [sorted(c) for c in loops if c not in KNOWN_LOOPS]
    assert not new, f"import loops (each a set of modules importing each other): {new}"
    stale = [sorted(c) for c in KNOWN_LOOPS if c not in loops]
    assert not stale, f"these known loops no longer occur: delete them from KNOWN_LOOPS: {stale}"


def test_no_private_names_across_modules(graph):
    # A private name (``_compute``) is never imported from another module; a private module (``nets._base``)
    # is imported only inside its own package.
    _, edges, tools = graph
    bad = []
    for importer, imports in {**edges, **tools}.items():
        for line, imported, names in imports:
            private_names = [n for n in names if n.startswith("_") and n != "__version__"]
            private_module = (_top_package(imported) != _top_package(importer)
                              and any(part.startswith("_") for part in imported.split(".")[1:]))
            if private_names or private_module:
                bad.append(f"{importer}:{line} imports {imported} {private_names or ''}".rstrip())
    assert not bad, "private names used by other modules (make them public where they are shared):\n" + "\n".join(bad)


def test_the_walk_sees_the_edges_it_must_see(graph):
    # A negative control: the walk finds function-local imports and the facade's lazy names.
    _, edges, _ = graph
    cli = {imported for _line, imported, _names in edges["segarch.cli"]}
    assert "segarch.training.loop" in cli  # ``segarch.train(...)`` through the facade
    assert "segarch.zoo" in cli  # ``from segarch import zoo`` inside a function
    assert _layer("segarch.training.loop") < _layer("segarch.nets.unet") < _layer("segarch.io.tiff")
