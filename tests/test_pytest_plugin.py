"""The pytest plugin, `pytest --subsetgrad`, run on small test suites with `pytester`."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytensor
import pytensor.gradient
import pytensor.sparse
import pytest

from subsetgrad.lint import recorder

# Inner suites run in this process (fast), and pytester removes the modules they
# import when they end. NumPy's C extensions cannot be loaded twice, so what
# compiling a graph imports lazily (scipy.sparse, numpy.fft) is imported here first.

IMPORTS = "import numpy as np\nimport pytensor\nimport pytensor.tensor as pt\nimport pytest\n"

# A table updated from its full gradient: SG101. Inner suites compile with
# FAST_COMPILE, as Numba compiles are slow.
DENSE = """\
W = pytensor.shared(np.ones((100, 4)), name="W")
idx = pt.lvector("idx")
cost = (W[idx] ** 2).sum()
g = pytensor.grad(cost, W)
step = pytensor.function([idx], cost, updates={W: W - 0.1 * g}, mode="FAST_COMPILE"){comment}
assert step([1, 2]) == 8.0
"""

# The FAQ's subset update: the gradient with respect to the looked-up rows.
CLEAN = """\
W = pytensor.shared(np.ones((100, 4)), name="W")
idx = pt.lvector("idx")
rows = W[idx]
cost = (rows**2).sum()
g = pytensor.grad(cost, rows)
updates = {W: pt.inc_subtensor(rows, -0.1 * g)}
step = pytensor.function([idx], cost, updates=updates, mode="FAST_COMPILE"){comment}
assert step([1, 2]) == 8.0
"""

HEADER = "subsetgrad: checking every compiled PyTensor graph"


def graph(kind: str, comment: str = "", indent: str = "    ") -> str:
    """`DENSE` or `CLEAN` code, with `comment` at the end of the compile line."""
    code = {"dense": DENSE, "clean": CLEAN}[kind].replace("{comment}", comment)
    return textwrap.indent(code, indent)


def make_test(name: str, kind: str, *, marker: str = "", comment: str = "") -> str:
    """A test function compiling a `kind` graph, under an optional marker line."""
    head = f"{marker}\n" if marker else ""
    return f"\n\n{head}def {name}():\n{graph(kind, comment)}"


def compile_line(source: str, after: str = "") -> int:
    """The line of the first `pytensor.function(` call after the line containing `after`."""
    lines = source.splitlines()
    start = next(i for i, text in enumerate(lines) if after in text)
    return next(i for i in range(start, len(lines)) if "pytensor.function(" in lines[i]) + 1


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run the inner suite in-process; the plugin must have ended its recording."""
    result = pytester.runpytest("-p", "no:cacheprovider", *args)
    assert recorder._active == []
    assert pytensor.grad is pytensor.gradient.grad
    assert not hasattr(pytensor.grad, "__wrapped__")
    return result


def finding(path: str, line: int, code: str) -> str:
    return f"{path}:{line}:*: {code} *"


# --------------------------------------------------------------------------- #
# Off by default, and light
# --------------------------------------------------------------------------- #
def test_importing_the_plugin_loads_neither_pytensor_nor_subsetgrad() -> None:
    code = (
        "import sys, pytest_subsetgrad; "
        "assert 'pytensor' not in sys.modules and 'subsetgrad' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_session_without_the_option_imports_nothing_heavy(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys

        def test_light(request):
            assert request.config.pluginmanager.has_plugin("subsetgrad")
            assert "pytensor" not in sys.modules and "subsetgrad" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line(f"{HEADER}*")


def test_options_are_in_their_own_group(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(
        [
            "subset-gradient traps in PyTensor graphs (subsetgrad):",
            "  --subsetgrad *",
            "  --subsetgrad-select=CODES",
            "  --subsetgrad-ignore=CODES",
        ]
    )


def test_without_the_option_nothing_changes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_dense=IMPORTS + make_test("test_dense", "dense"))
    result = run(pytester)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*= subsetgrad =*")
    result.stdout.no_fnmatch_line(f"{HEADER}*")


def test_the_marker_is_registered_when_the_plugin_is_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        IMPORTS + make_test("test_dense", "dense", marker="@pytest.mark.subsetgrad_ignore('SG101')")
    )
    result = run(pytester, "--strict-markers")
    result.assert_outcomes(passed=1)


# --------------------------------------------------------------------------- #
# Findings fail the session
# --------------------------------------------------------------------------- #
def test_a_dense_update_fails_the_session(pytester: pytest.Pytester) -> None:
    source = IMPORTS + make_test("test_dense", "dense")
    pytester.makepyfile(test_dense=source)
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            f"{HEADER} (select: default, ignore: none)",
            "*= subsetgrad =*",
            finding("test_dense.py", compile_line(source), "SG101")
            + "`W` (100x4 float64) is updated from a dense scatter*",
            "  help: *",
            "Found 1 finding (1 warning).",
            "*= 1 passed, 1 subsetgrad finding in *",
        ]
    )


def test_a_clean_graph_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=IMPORTS + make_test("test_clean", "clean"))
    result = run(pytester, "--subsetgrad", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"{HEADER}*", "subsetgrad: 1 compiled graph checked, no findings"])
    result.stdout.no_fnmatch_line("*= subsetgrad =*")


def test_no_summary_without_findings_unless_verbose(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=IMPORTS + make_test("test_clean", "clean"))
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([f"{HEADER}*"])
    result.stdout.no_fnmatch_line("*subsetgrad: * checked*")
    result.stdout.no_fnmatch_line("*= subsetgrad =*")


def test_info_findings_do_not_fail(pytester: pytest.Pytester) -> None:
    # The rewrite is active, so SG101 is info. The functions are kept alive: the
    # recorder learns whether the rewrite ran only while the graph exists.
    source = IMPORTS + "import subsetgrad\n\nKEEP = []\n" + make_test("test_rewritten", "dense")
    source = source.replace('mode="FAST_COMPILE"', 'mode=subsetgrad.mode("FAST_COMPILE")')
    source = source.replace("    assert step(", "    KEEP.append(step)\n    assert step(")
    pytester.makepyfile(test_rewritten=source)
    quiet = run(pytester, "--subsetgrad")
    assert quiet.ret == pytest.ExitCode.OK
    quiet.stdout.no_fnmatch_line("*= subsetgrad =*")
    verbose = run(pytester, "--subsetgrad", "-v")
    assert verbose.ret == pytest.ExitCode.OK
    verbose.stdout.fnmatch_lines(
        [
            "*= subsetgrad =*",
            finding("test_rewritten.py", compile_line(source), "SG101 ?info?")
            + "the subsetgrad rewrite is active*",
            "Found 1 finding (1 info).",
        ]
    )


def test_the_last_line_counts_what_the_block_shows_and_which_fail(
    pytester: pytest.Pytester,
) -> None:
    # One finding fails the run (the rewrite is off), one is info (it is on).
    rewritten = make_test("test_rewritten", "dense").replace(
        'mode="FAST_COMPILE"', 'mode=subsetgrad.mode("FAST_COMPILE")'
    )
    rewritten = rewritten.replace("    assert step(", "    KEEP.append(step)\n    assert step(")
    source = IMPORTS + "import subsetgrad\n\nKEEP = []\n" + make_test("test_dense", "dense")
    source += rewritten
    pytester.makepyfile(test_mixed=source)
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*= subsetgrad =*",
            finding("test_mixed.py", compile_line(source), "SG101") + "dense scatter*",
            finding("test_mixed.py", compile_line(source, "def test_rewritten"), "SG101 ?info?")
            + "*",
            "Found 2 findings (1 warning, 1 info).",
            "*= 2 passed, 2 subsetgrad findings (1 failing) in *",
        ]
    )


def test_a_rewritten_function_collected_at_teardown_stays_info(pytester: pytest.Pytester) -> None:
    # Whether the rewrite ran is known only while the compiled graph lives; the
    # plugin reads it at the end of the call phase, before teardown collects it.
    pytester.makeconftest(
        """
        import gc
        import pytest

        @pytest.fixture(autouse=True)
        def collect_garbage():
            yield
            gc.collect()
        """
    )
    source = IMPORTS + "import subsetgrad\n" + make_test("test_rewritten", "dense")
    source = source.replace('mode="FAST_COMPILE"', 'mode=subsetgrad.mode("FAST_COMPILE")')
    pytester.makepyfile(test_rewritten=source)
    result = run(pytester, "--subsetgrad", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["Found 1 finding (1 info)."])


def test_graphs_compiled_in_fixtures_are_seen(pytester: pytest.Pytester) -> None:
    conftest = IMPORTS + "\n\n@pytest.fixture\ndef step():\n" + graph("dense")
    conftest = conftest.replace("assert step([1, 2]) == 8.0", "return step")
    pytester.makeconftest(conftest)
    pytester.makepyfile(test_it="def test_it(step):\n    assert step([1, 2]) == 8.0\n")
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([finding("conftest.py", compile_line(conftest), "SG101")])


def test_graphs_compiled_at_import_are_seen(pytester: pytest.Pytester) -> None:
    source = IMPORTS + "\n" + graph("dense", indent="") + "\n\ndef test_nothing():\n    pass\n"
    pytester.makepyfile(test_module=source)
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([finding("test_module.py", compile_line(source), "SG101")])


# --------------------------------------------------------------------------- #
# Exemptions: the marker, options, config, inline comments
# --------------------------------------------------------------------------- #
def test_the_bare_marker_exempts_its_test_only(pytester: pytest.Pytester) -> None:
    source = (
        IMPORTS
        + make_test("test_exempt", "dense", marker="@pytest.mark.subsetgrad_ignore")
        + make_test("test_checked", "dense")
    )
    pytester.makepyfile(test_two=source)
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [finding("test_two.py", compile_line(source, "def test_checked"), "SG101"), "Found 1 *"]
    )
    result.stdout.no_fnmatch_line(finding("test_two.py", compile_line(source), "SG101"))


def test_the_bare_marker_makes_a_dense_test_pass(pytester: pytest.Pytester) -> None:
    marker = "@pytest.mark.subsetgrad_ignore"
    pytester.makepyfile(test_exempt=IMPORTS + make_test("test_exempt", "dense", marker=marker))
    result = run(pytester, "--subsetgrad", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["subsetgrad: 0 compiled graphs checked, 1 exempted by marker, no findings"]
    )


@pytest.mark.parametrize(
    ("codes", "status"),
    [
        ('"SG101"', pytest.ExitCode.OK),
        ('"SG2", "SG1"', pytest.ExitCode.OK),
        ('"SG2"', pytest.ExitCode.TESTS_FAILED),
        ('"SG102", "SG3"', pytest.ExitCode.TESTS_FAILED),
    ],
)
def test_the_marker_with_codes_exempts_only_those(
    pytester: pytest.Pytester, codes: str, status: pytest.ExitCode
) -> None:
    marker = f"@pytest.mark.subsetgrad_ignore({codes})"
    pytester.makepyfile(test_dense=IMPORTS + make_test("test_dense", "dense", marker=marker))
    result = run(pytester, "--subsetgrad")
    assert result.ret == status
    assert ("SG101" in result.stdout.str()) == (status != pytest.ExitCode.OK)


def test_a_module_mark_exempts_graphs_compiled_at_import(pytester: pytest.Pytester) -> None:
    source = (
        IMPORTS
        + "\npytestmark = pytest.mark.subsetgrad_ignore('SG1')\n\n"
        + graph("dense", indent="")
        + "\n\ndef test_nothing():\n    pass\n"
    )
    pytester.makepyfile(test_module=source)
    result = run(pytester, "--subsetgrad", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["subsetgrad: 1 compiled graph checked, no findings"])


def test_a_wide_fixture_is_not_exempted_by_the_test_that_sets_it_up(
    pytester: pytest.Pytester,
) -> None:
    conftest = (
        IMPORTS
        + "\n\n@pytest.fixture(scope='session')\ndef session_step():\n"
        + graph("dense").replace("assert step([1, 2]) == 8.0", "return step")
        + "\n\n@pytest.fixture\ndef function_step():\n"
        + graph("dense").replace("assert step([1, 2]) == 8.0", "return step")
    )
    pytester.makeconftest(conftest)
    pytester.makepyfile(
        test_it="""
        import pytest

        @pytest.mark.subsetgrad_ignore
        def test_it(session_step, function_step):
            pass
        """
    )
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [finding("conftest.py", compile_line(conftest, "def session_step"), "SG101"), "Found 1 *"]
    )


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["--subsetgrad-ignore", "SG101"], pytest.ExitCode.OK),
        (["--subsetgrad-ignore=sg1,SG3"], pytest.ExitCode.OK),
        (["--subsetgrad-select", "SG2,SG3"], pytest.ExitCode.OK),
        (
            ["--subsetgrad-select", "SG1", "--subsetgrad-ignore", "SG102"],
            pytest.ExitCode.TESTS_FAILED,
        ),
    ],
)
def test_select_and_ignore_options(
    pytester: pytest.Pytester, args: list[str], status: pytest.ExitCode
) -> None:
    pytester.makepyfile(test_dense=IMPORTS + make_test("test_dense", "dense"))
    result = run(pytester, "--subsetgrad", *args)
    assert result.ret == status
    result.assert_outcomes(passed=1)


def test_the_header_shows_the_selection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_clean=IMPORTS + make_test("test_clean", "clean"))
    result = run(
        pytester, "--subsetgrad", "--subsetgrad-select=sg1, SG2", "--subsetgrad-ignore=SG3"
    )
    result.stdout.fnmatch_lines([f"{HEADER} (select: SG1, SG2, ignore: SG3)"])


@pytest.mark.parametrize("option", ["--subsetgrad-select", "--subsetgrad-ignore"])
def test_an_unknown_code_is_a_usage_error(pytester: pytest.Pytester, option: str) -> None:
    pytester.makepyfile(test_clean=IMPORTS + make_test("test_clean", "clean"))
    result = run(pytester, "--subsetgrad", f"{option}=SG1,SG999")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {option}: unknown rule code 'SG999'"])


def test_an_unknown_code_in_a_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    marker = "@pytest.mark.subsetgrad_ignore('SG10O')"
    pytester.makepyfile(test_dense=IMPORTS + make_test("test_dense", "dense", marker=marker))
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: test_dense.py::test_dense: @pytest.mark.subsetgrad_ignore: "
            "unknown rule code 'SG10O'"
        ]
    )


@pytest.mark.parametrize(
    ("table", "args", "status"),
    [
        ('ignore = ["SG101"]', [], pytest.ExitCode.OK),
        ('per-file-ignores = {"test_dense.py" = ["SG1"]}', [], pytest.ExitCode.OK),
        ('select = ["SG2"]', [], pytest.ExitCode.OK),
        # The command line's select replaces the config's.
        ('select = ["SG2"]', ["--subsetgrad-select=SG1"], pytest.ExitCode.TESTS_FAILED),
        # Ignore lists add up.
        ('ignore = ["SG3"]', ["--subsetgrad-ignore=SG101"], pytest.ExitCode.OK),
    ],
)
def test_the_pyproject_config_is_honoured(
    pytester: pytest.Pytester, table: str, args: list[str], status: pytest.ExitCode
) -> None:
    pytester.makepyprojecttoml(f"[tool.subsetgrad]\n{table}\n")
    pytester.makepyfile(test_dense=IMPORTS + make_test("test_dense", "dense"))
    result = run(pytester, "--subsetgrad", *args)
    assert result.ret == status
    result.stdout.fnmatch_lines([f"{HEADER} (*, config: pyproject.toml)"])


def test_a_bad_config_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.subsetgrad]\nselct = ["SG1"]\n')
    pytester.makepyfile(test_clean=IMPORTS + make_test("test_clean", "clean"))
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: *pyproject.toml: unknown key 'selct' in ?tool.subsetgrad?*"]
    )


def test_an_inline_suppression_works(pytester: pytest.Pytester) -> None:
    comment = "  # subsetgrad: ignore[SG101]"
    pytester.makepyfile(test_dense=IMPORTS + make_test("test_dense", "dense", comment=comment))
    result = run(pytester, "--subsetgrad", "-v")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["subsetgrad: 1 compiled graph checked, no findings"])


def test_a_stale_suppression_is_sg901(pytester: pytest.Pytester) -> None:
    source = IMPORTS + make_test("test_clean", "clean", comment="  # subsetgrad: ignore[SG101]")
    pytester.makepyfile(test_clean=source)
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            f"test_clean.py:{compile_line(source)}:*: SG901 unused suppression: "
            "it suppresses nothing on this line.",
            "Found 1 finding (1 warning).",
        ]
    )


@pytest.mark.parametrize(
    ("marker", "args"),
    [("@pytest.mark.skip", []), ("", ["-k", "not test_dense"])],
    ids=["skipped", "deselected"],
)
def test_a_suppression_in_a_test_that_did_not_run_is_not_stale(
    pytester: pytest.Pytester, marker: str, args: list[str]
) -> None:
    comment = "  # subsetgrad: ignore[SG101]"
    source = (
        IMPORTS
        + make_test("test_dense", "dense", marker=marker, comment=comment)
        + make_test("test_clean", "clean")
    )
    pytester.makepyfile(test_two=source)
    result = run(pytester, "--subsetgrad", "-v", *args)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["subsetgrad: 1 compiled graph checked, no findings"])


# --------------------------------------------------------------------------- #
# Robustness
# --------------------------------------------------------------------------- #
def test_the_recording_ends_when_the_session_errors(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        def pytest_sessionfinish(session):
            raise RuntimeError("conftest breaks the session")
        """
    )
    pytester.makepyfile(test_dense=IMPORTS + make_test("test_dense", "dense"))
    result = run(pytester, "--subsetgrad")  # `run` asserts the recording ended
    assert result.ret not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED)
    assert "conftest breaks the session" in result.stdout.str() + result.stderr.str()


def test_a_collection_error_keeps_its_exit_status(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_dense=IMPORTS + make_test("test_dense", "dense"), test_broken="import no_such_module\n"
    )
    result = run(pytester, "--subsetgrad")
    assert result.ret == pytest.ExitCode.INTERRUPTED
