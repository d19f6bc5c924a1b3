"""The house's shape: ncfm's imports (at module level and inside functions) form no circle, the
command layer and the report sit above every stage, and the model families are peers on ncfm.fold."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "ncfm"
TOP = {"cli", "demo", "report", "report_page", "report_detect", "report_task"}  # strings stages together, or draws them
FAMILIES = {"train", "detect"}


def imports() -> dict[str, set[str]]:
    """Every ncfm module -> the ncfm modules it imports anywhere in its file."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ncfm":
                parts = node.module.split(".")
                found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.Import):
                found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ncfm.")}
        graph[path.stem] = found - {path.stem, "__init__"}
    return graph


def test_no_import_circle():
    graph = imports()
    state: dict[str, str] = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            assert state.get(target) != "open", "import circle: " + " -> ".join([*path, target])
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_no_stage_imports_the_command_layer_or_the_report():
    graph = imports()
    upward = {m: sorted(graph[m] & TOP) for m in graph if m not in TOP and graph[m] & TOP}
    assert not upward, f"stages importing the layer above them: {upward}"


def test_the_families_are_peers_on_the_fold():
    graph = imports()
    for family in FAMILIES:
        assert "fold" in graph[family] and not graph[family] & (FAMILIES - {family}), graph[family]
    assert not graph["crops"] & FAMILIES, "crops takes boxes in and gives a crop set out"
    assert not graph["fold"] & FAMILIES
