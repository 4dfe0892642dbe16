"""The README's CI snippet, run the way the workflow runs it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
TRAIN = Path(__file__).parent / "lint" / "fixtures" / "sg101_dense_update.py"


def ci_commands() -> list[str]:
    text = README.read_text()
    block = re.search(r"<!-- ci-snippet -->\s*```yaml\n(.*?)```", text, re.S)
    assert block, "README lost its CI snippet"
    return [
        m.group(1).strip()
        for m in re.finditer(r"^\s*-?\s*run:\s*(subsetgrad check .*)$", block.group(1), re.M)
    ]


def test_ci_snippet_runs(tmp_path: Path) -> None:
    # The console script installed next to this interpreter, as `pip install` puts it.
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "subsetgrad").exists(), "the subsetgrad console script is not installed"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    shutil.copy(TRAIN, tmp_path / "train.py")
    commands = ci_commands()
    assert len(commands) == 2
    annotate, sarif = commands
    # A shell runs each `run:` line; the workflow's shell fails the step on exit 1.
    done = subprocess.run(
        annotate, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith("::warning file=train.py,line=9,")
    done = subprocess.run(sarif, shell=True, cwd=tmp_path, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    log = json.loads((tmp_path / "subsetgrad.sarif").read_text())
    assert log["version"] == "2.1.0" and log["runs"][0]["results"]
    assert shlex.split(annotate)[0] == "subsetgrad"
