"""`subsetgrad.backends` sits below the rewrite, and JAX and PyTorch load only on use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import subsetgrad.backends

PACKAGE = Path(subsetgrad.backends.__file__).parent


def test_backends_import_no_upper_layer() -> None:
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith(
                    ("subsetgrad.rewrite", "subsetgrad.optim", "subsetgrad.lint")
                ), f"{path.name} imports {name}"


def test_import_subsetgrad_loads_neither_jax_nor_torch() -> None:
    code = (
        "import sys, subsetgrad, subsetgrad.backends\n"
        "subsetgrad.mode('CVM'); subsetgrad.backends.backend_mode('NUMBA')\n"
        "print(sorted({'jax', 'torch'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
