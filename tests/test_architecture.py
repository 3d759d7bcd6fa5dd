"""The layers of docs/architecture.md, as the code has them: each folder imports only the layers
the diagram lets it, nothing imports upward, and no modules import each other in a circle
(imports inside functions count; those under ``if TYPE_CHECKING`` do not, they never run)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "riembench"

#: layer -> the layers it may import (besides itself and the top package's __version__);
#: docs/architecture.md draws the same
ALLOWED = {
    "core": set(),
    "config": {"core"},
    "engine": {"core", "config"},
    "data": {"core", "config"},
    "store": {"core", "config"},
    "backbones": {"core", "config", "data"},
    "compression": {"core", "config", "engine", "data"},
    "sizing": {"core", "config", "engine", "compression"},
    "harness": {"core", "config", "engine", "data", "store", "backbones", "compression",
                "sizing"},
    "report": {"core", "config", "store"},
    "cli": {"core", "config", "engine", "data", "store", "backbones", "compression", "sizing",
            "harness", "report"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names if a.name.startswith("riembench"))

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level or not node.module or not node.module.startswith("riembench"):
                return
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for target in _imports(path):
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]  # a name imported from a module
            if target in modules and target not in (name, "riembench"):
                graph[name].add(target)
    return {m: graph[m] for m in modules}


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_folder_is_a_layer_with_a_docstring():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders == set(ALLOWED)
    for name in folders:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        assert doc, f"{name}/__init__.py says no job"


def test_layers_import_only_what_the_diagram_allows():
    wrong = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                   if _layer(t) != _layer(m) and _layer(t) not in ALLOWED[_layer(m)])
    assert not wrong, "imports against the layer diagram:\n" + "\n".join(wrong)


def test_nothing_below_imports_the_runner_the_cli_or_the_reporter():
    top = ("riembench.harness.runner", "riembench.cli", "riembench.report")
    wrong = sorted(f"{m} -> {t}" for m, targets in _graph().items() for t in targets
                   if t.startswith(top) and _layer(m) not in ("cli",)
                   and not (t.startswith("riembench.report") and _layer(m) == "report")
                   and not (t == "riembench.harness.runner" and _layer(m) == "harness"))
    assert not wrong, "\n".join(wrong)


def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"modules importing each other in a circle: {circles}"


def test_the_runner_stays_a_sequencer():
    lines = (PACKAGE / "harness" / "runner.py").read_text().count("\n")
    assert lines < 250, f"harness/runner.py has {lines} lines"
