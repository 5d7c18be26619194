"""The package's floors, read from its source: no import circle between modules, and no
room importing a room on a higher floor; ``g2lstm_runtime`` needs neither torch, fairseq
nor ``fairseq_g2lstm``.

Every ``import`` counts, also those inside functions (a lazy import is still a
dependency). Importing ``a.b.c`` also runs the ``__init__`` of each package on the way
that the importer is not itself inside, so those count as imports too; the package root
(``fairseq_g2lstm/__init__.py``, the plugin's entry that fairseq's ``--user-dir``
imports) runs before any of its modules, and sits on the top floor.
"""
import ast
from pathlib import Path
from typing import Dict, List, Set

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "fairseq_g2lstm"
RUNTIME = "g2lstm_runtime"

# Rooms (the first name below fairseq_g2lstm), bottom up. A room may import its own
# floor and those below it, never one above.
FLOORS = [
    ("atomic_file", "cli_args", "compat"),  # small helpers any room may use
    ("gates",),  # the gate math
    ("cuda",),  # the fused kernel the layers dispatch to
    ("rnn",),  # cells, layers, the gate recorder's tallies
    ("models",),  # the fairseq models; loading extension points (models/loading.py)
    ("checkpoints", "compress", "gate_stats", "quantize", "export", "data"),  # tools on the model
    ("serve", "engines"),  # what serves or runs an exported model
    ("__init__", "__main__"),  # the plugin's entry: registers the models, wires the tools' loading hooks
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def module_files(package: str) -> Dict[str, Path]:
    """Dotted module name -> file, for every module of ``package`` (a package under its own name)."""
    modules = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: Set[str]) -> Set[str]:
    """The modules that importing ``module`` (whose file is ``path``) imports: every
    ``import``/``from ... import`` anywhere in it, relative ones resolved; ``from P import
    name`` is ``P.name`` where that is a module, else ``P``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source)
    return found


def with_packages_run(importer: str, target: str) -> List[str]:
    """``target`` and the packages above it whose ``__init__`` importing it runs: those the
    importer is not inside (a module's own packages are initialised before it)."""
    parts = target.split(".")
    chain = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return [name for name in chain if not (importer == name or importer.startswith(name + "."))]


def import_graph(*packages: str) -> Dict[str, Set[str]]:
    """module -> the modules of ``packages`` it imports (directly, or by package ``__init__``)."""
    files = {name: path for package in packages for name, path in module_files(package).items()}
    graph = {}
    for module, path in files.items():
        targets = set()
        for imported in imported_modules(module, path, set(files)):
            targets.update(name for name in with_packages_run(module, imported) if name in files)
        graph[module] = targets - {module}
    return graph


def find_circle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import circle as [a, b, ..., a], or [] when there is none (depth-first search)."""
    state: Dict[str, str] = {}  # "open" while on the path, "done" after
    path: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                circle = visit(nxt)
                if circle:
                    return circle
        path.pop()
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state:
            circle = visit(start)
            if circle:
                return circle
    return []


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_room_is_on_a_floor():
    unplaced = sorted({room(m) for m in module_files(PACKAGE)} - set(FLOOR))
    assert not unplaced, f"rooms not in test_layering.FLOORS (place them): {unplaced}"


def test_no_import_circle():
    circle = find_circle(import_graph(PACKAGE, RUNTIME))
    assert not circle, "import circle: " + " -> ".join(circle)


def test_no_room_imports_a_room_above_it():
    upward = sorted(f"{module} ({room(module)}, floor {FLOOR[room(module)]}) imports {target} "
                    f"({room(target)}, floor {FLOOR[room(target)]})"
                    for module, targets in import_graph(PACKAGE).items() for target in targets
                    if room(module) in FLOOR and room(target) in FLOOR and FLOOR[room(target)] > FLOOR[room(module)])
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_runtime_needs_neither_torch_nor_fairseq_nor_the_plugin():
    forbidden = {"torch", "fairseq", PACKAGE}
    files = module_files(RUNTIME)
    found = sorted(f"{module} imports {imported}" for module, path in files.items()
                   for imported in imported_modules(module, path, set(files))
                   if imported.split(".")[0] in forbidden)
    assert not found, found


def test_the_walk_sees_lazy_relative_and_package_imports(tmp_path):
    """The checks above rest on the walk: it finds an import inside a function, resolves
    ``from ..x import y`` to a module, counts the package ``__init__`` an import runs, and
    reports a circle and an upward arrow when there is one."""
    files = module_files(PACKAGE)
    models = import_graph(PACKAGE)["fairseq_g2lstm.models.g2lstm"]
    assert {"fairseq_g2lstm.rnn", "fairseq_g2lstm.gates", "fairseq_g2lstm.models.attention"} <= models
    assert "fairseq_g2lstm.models" not in models  # its own package ran before it
    lazy = imported_modules("fairseq_g2lstm.cuda", files["fairseq_g2lstm.cuda"], set(files))
    assert "fairseq_g2lstm.cuda.function" in lazy  # imported inside cuda_sequence_runner
    assert with_packages_run("fairseq_g2lstm.cuda.function", "fairseq_g2lstm.rnn.cell") == [
        "fairseq_g2lstm.rnn", "fairseq_g2lstm.rnn.cell"]
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []
