"""The layers import one way: graph <- rewrite, optim <- lint <- cli, with no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "subsetgrad"

# What each layer may import from subsetgrad (besides itself). `backends` holds
# per-backend ops and linkers, below the rewrite that selects them.
ALLOWED: dict[str, set[str]] = {
    "_version": set(),
    "graph": set(),
    "backends": set(),
    "rewrite": {"graph", "backends"},
    "optim": {"graph"},
    "lint": {"graph", "rewrite", "_version"},
    "cli": {"lint", "demo", "_version"},
    "demo": {"graph", "rewrite", "optim", "lint", "backends", "__init__"},
    "__init__": {"_version", "graph", "rewrite", "optim", "lint", "backends"},
    "__main__": {"cli"},
}
# The only names the lint may take from the rewrite: whether a mode runs it.
LINT_FROM_REWRITE = {"rewrite_active", "ran_on", "table_copied_by"}


def _layer(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _module(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(("subsetgrad", *parts))


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """Every subsetgrad import in `path` (module level or not): (module, names, line)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names], node.lineno))
    return [(m, names, line) for m, names, line in found if m.split(".")[0] == "subsetgrad"]


def _target_layer(module: str, names: list[str]) -> list[str]:
    parts = module.split(".")
    if len(parts) > 1:
        return [parts[1]]
    # ``from subsetgrad import x``: the layer is the name itself, or the package.
    return [n if (SRC / n).is_dir() or (SRC / f"{n}.py").exists() else "__init__" for n in names]


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    layer = _layer(path)
    for module, names, line in _imports(path):
        for target in _target_layer(module, names):
            if target == layer:
                continue
            assert target in ALLOWED[layer], (
                f"{path.relative_to(SRC)}:{line} ({layer}) imports {module} ({target})"
            )
            if layer == "lint" and target == "rewrite":
                assert module == "subsetgrad.rewrite" and set(names) <= LINT_FROM_REWRITE, (
                    f"{path.relative_to(SRC)}:{line}: the lint may only ask the rewrite "
                    f"{sorted(LINT_FROM_REWRITE)}, not import {module}.{names}"
                )


def test_lint_infrastructure_does_not_import_rules() -> None:
    """A rule imports no other rule, and nothing but the package imports the rules."""
    lint = SRC / "lint"
    for path in sorted(lint.rglob("*.py")):
        is_rule = path.parent.name == "rules"
        for module, names, line in _imports(path):
            if not module.startswith("subsetgrad.lint.rules") and not (
                module == "subsetgrad.lint" and "rules" in names
            ):
                continue
            where = f"{path.relative_to(SRC)}:{line}"
            if is_rule:
                assert path.name == "__init__.py", f"{where}: a rule imports another rule"
            else:
                assert path.name == "__init__.py", f"{where}: infrastructure imports a rule"


def test_no_import_cycle_between_modules() -> None:
    """Module-level imports among subsetgrad's modules form no cycle."""
    modules = {_module(p): p for p in FILES}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            edges[name] |= {t for t in targets if t in modules and t != name}
    # A package imported by one of its own modules is its __init__: not a cycle in layers.
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if m.startswith(t + "."):
                continue
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], m, t] if t in stack else [m, t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, [*stack, m])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [])
