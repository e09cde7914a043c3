"""The shape ARCHITECTURE.md promises, checked on the source: no import cycle inside the package
(at module level or inside a function), each outside world imported by its one module, and the
adapters below the plan."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "modelctl"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(modules of the package it imports, top-level outside packages it imports), anywhere in the file."""
    inside, outside = set(), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (inside if alias.name in known else outside).add(
                    alias.name if alias.name in known else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
                if not target.startswith("modelctl"):
                    outside.add(target.split(".")[0])
                    continue
            # `from . import x` names a submodule when one exists, else a name in the package.
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                inside.add(sub if sub in known else target)
    inside.discard(name)
    return inside, outside


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found))[0] for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_relative_imports_are_resolved():
    edges = graph()
    assert "modelctl.runtime" in edges["modelctl.runtime.docker_engine"]
    assert "modelctl.vllm.readiness" in edges["modelctl.controller"]
    assert "modelctl.vllm" in edges["modelctl.runtime"]


def test_no_import_cycle_in_the_package():
    assert find_cycle(graph()) is None


@pytest.mark.parametrize(
    ("outside", "owners"),
    [
        ("docker", {"modelctl.runtime.docker_engine"}),
        ("pynvml", {"modelctl.gpu"}),
        ("uvicorn", {"modelctl.service"}),
    ],
)
def test_each_outside_world_has_one_module(outside, owners):
    found = modules()
    users = {name for name, path in found.items() if outside in imports_of(name, path, set(found))[1]}
    assert users == owners


def test_adapters_do_not_import_the_plan_or_the_controller():
    edges = graph()
    adapters = ["modelctl.runtime", "modelctl.runtime.docker_engine", "modelctl.gpu", "modelctl.vllm.readiness"]
    for adapter in adapters:
        upward = edges[adapter] & {"modelctl.plan", "modelctl.controller", "modelctl.catalog", "modelctl.service"}
        assert upward == set(), f"{adapter} imports {upward}"


def test_results_and_renderers_do_not_pull_in_the_controller():
    edges = graph()
    for module in ("modelctl.results", "modelctl.report", "modelctl.client"):
        assert "modelctl.controller" not in edges[module]
