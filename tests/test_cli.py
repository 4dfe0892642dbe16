"""The command line: help, exit codes, one-line errors, and the demo subcommand."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from subsetgrad import cli


def test_help_lists_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: subsetgrad" in out and "demo" in out


def test_demo_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--steps", "--batch", "--mode", "--seed"):
        assert option in out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["no-such-command"],
        ["demo", "--steps", "0"],
        ["demo", "--steps", "many"],
        ["demo", "--batch", "-3"],
        ["demo", "--no-such-option"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "error:" in captured.err


def test_runtime_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--steps", "1", "--mode", "NO_SUCH_MODE"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown PyTensor mode 'NO_SUCH_MODE'" in err


def test_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--steps", "3", "--batch", "16", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "B = 16 pairs/step, 3 steps" in out
    assert "fired: 2 table updates" in out


def test_demo_is_dispatched_with_defaults() -> None:
    args = cli.build_parser().parse_args(["demo"])
    assert args.handler is cli.demo
    assert (args.steps, args.batch, args.mode, args.seed) == (300, 256, "NUMBA", 0)


def test_example_prints_the_bundled_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["example"]) == 0
    shipped = Path(cli.__file__).parent / "examples" / cli.EXAMPLE
    assert capsys.readouterr().out == shipped.read_text()
    assert cli.main(["example", "--help"]) == 0
    assert f"subsetgrad check {cli.EXAMPLE}" in capsys.readouterr().out


def test_the_example_has_one_finding_and_the_fix_its_docstring_names_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["example"]) == 0
    source = capsys.readouterr().out
    compile_line = (
        "step = pytensor.function([ids, score], cost, updates={E: E - 2.0 * g_E, w: w - 0.1 * g_w})"
    )
    assert compile_line in source and "``mode=subsetgrad.mode()``" in source
    (tmp_path / "example.py").write_text(source)
    assert cli.main(["check", "example.py", "--format", "json"]) == 1
    line = source.splitlines().index(compile_line) + 1
    found = [(f["code"], f["severity"], f["line"]) for f in json.loads(capsys.readouterr().out)]
    assert found == [("SG101", "warning", line)]
    fixed = source.replace("import pytensor\n", "import pytensor\nimport subsetgrad\n", 1)
    fixed = fixed.replace(compile_line, compile_line[:-1] + ", mode=subsetgrad.mode())")
    (tmp_path / "example.py").write_text(fixed)
    assert cli.main(["check", "example.py", "--format", "json"]) == 0
    found = [(f["code"], f["severity"], f["line"]) for f in json.loads(capsys.readouterr().out)]
    assert found == [("SG101", "info", line + 1)]


def test_cli_module_does_not_import_pytensor_at_top_level() -> None:
    tree = ast.parse(Path(cli.__file__).read_text())
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    heavy = {m for m in imported if m.split(".")[0] in {"pytensor", "numpy", "numba"}}
    assert not heavy | {m for m in imported if m.startswith("subsetgrad.")}
