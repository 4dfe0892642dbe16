"""pytest plugin: ``pytest --subsetgrad`` lints every PyTensor graph compiled in the session.

Registered through the ``pytest11`` entry point, so every pytest run in the
environment imports this module. That is why it is a top-level module and not
part of the ``subsetgrad`` package: importing ``subsetgrad`` imports PyTensor
and registers the rewrite. This module imports neither ``subsetgrad`` nor
``pytensor``, at import time or when ``--subsetgrad`` is not given. With it,
they are imported in ``pytest_configure``, after the initial conftest files
(which may set ``PYTENSOR_FLAGS``) have been loaded.

With ``--subsetgrad`` the whole session runs under `subsetgrad.record()`. A
graph belongs to the test running when it was compiled (a fixture wider than a
function: to its module, class or session; an import: to the module), and is
checked with that node's ``@pytest.mark.subsetgrad_ignore`` exemptions.
Findings left after ``[tool.subsetgrad]`` per-file ignores and inline
``# subsetgrad: ignore[...]`` comments are listed at the end, and any that is
not info-only fails the session.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from subsetgrad.lint.config import Config
    from subsetgrad.lint.findings import Finding, Location
    from subsetgrad.lint.recorder import Recording

MARKER = "subsetgrad_ignore"
CHECKER_NAME = "subsetgrad-checker"


def _codes(text: str) -> list[str]:
    """Comma-separated rule codes or prefixes, as the ``subsetgrad`` command line reads them."""
    return [c.strip().upper() for c in text.split(",") if c.strip()]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("subsetgrad", "subset-gradient traps in PyTensor graphs (subsetgrad)")
    group.addoption(
        "--subsetgrad",
        action="store_true",
        default=False,
        help="check every PyTensor graph compiled during the session; "
        "fail the session if the lint finds subset-gradient traps",
    )
    group.addoption(
        "--subsetgrad-select",
        type=_codes,
        default=None,
        metavar="CODES",
        help="with --subsetgrad: comma-separated rule codes or prefixes to enable "
        "(replaces select in [tool.subsetgrad])",
    )
    group.addoption(
        "--subsetgrad-ignore",
        type=_codes,
        default=None,
        metavar="CODES",
        help="with --subsetgrad: comma-separated rule codes or prefixes to disable "
        "(added to ignore in [tool.subsetgrad])",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Registered even when the plugin is off, so that --strict-markers accepts it.
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*codes): exempt the graphs this test compiles from `pytest --subsetgrad`; "
        "given rule codes or prefixes, exempt them from those rules only",
    )
    if config.getoption("subsetgrad"):
        config.pluginmanager.register(Checker(config), CHECKER_NAME)


def _exemption(node: Any) -> list[str] | None:
    """Codes the ``subsetgrad_ignore`` markers on `node` exempt; None when they exempt all."""
    codes: list[str] = []
    for mark in node.iter_markers(MARKER):
        if not mark.args:
            return None
        codes.extend(c for arg in mark.args for c in _codes(str(arg)))
    return codes


def _source_of(func: Callable[..., object]) -> Path | None:
    code = getattr(inspect.unwrap(func), "__code__", None)
    return Path(code.co_filename) if code is not None else None


class Checker:
    """The active plugin: records the session, checks each node's graphs, reports at the end."""

    def __init__(self, config: pytest.Config) -> None:
        from subsetgrad.lint import config as lint_config
        from subsetgrad.lint import report

        select = config.getoption("subsetgrad_select")
        ignore = config.getoption("subsetgrad_ignore")
        try:
            if select is not None:
                lint_config.check_codes(select, "--subsetgrad-select")
            if ignore is not None:
                lint_config.check_codes(ignore, "--subsetgrad-ignore")
            found = lint_config.find_pyproject(config.rootpath)
            self.lint_config: Config = lint_config.load(found) if found else lint_config.Config()
        except lint_config.ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        self.select, self.ignore = report.effective_selection(self.lint_config, select, ignore)
        self.rootpath = config.rootpath
        self.findings: list[Finding] = []
        self.checked = 0
        self.exempted = 0
        self._exit = ExitStack()
        # Closed at unconfigure at the latest, however the session ends.
        config.add_cleanup(self._exit.close)
        self._recording: Recording | None = None
        # Who owns the graphs compiled now (a test, fixture scope node or collector),
        # and the file whose code runs, for suppression comments.
        self._owners: list[tuple[Any, Path | None]] = []
        self._found: dict[tuple[object, ...], Finding] = {}
        self._sources: set[Path] = set()
        # A suppression may belong to a test that was deselected, skipped or never
        # run: SG901 is kept only in test files whose tests all ran, and in other
        # files only when every test ran.
        self._test_files: set[Path] = set()
        self._partial: set[Path] = set()
        self._ran: set[str] = set()

    # ----------------------------------------------------------------------- #
    # Recording, and who owns each compiled graph
    # ----------------------------------------------------------------------- #
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from subsetgrad.lint import record

        self._owners = [(session, None)]
        self._recording = self._exit.enter_context(record())

    def _flush(self) -> None:
        """Check the graphs compiled since the last owner change, as the current owner's."""
        rec = self._recording
        if rec is None or not rec._captured:
            return
        from subsetgrad.lint import analyse_all

        # Read now: `programs` learns whether the rewrite ran only while the graph lives.
        programs = rec.programs
        # Checked programs are dropped: they hold the tables' data.
        del rec._captured[:]
        rec.grad_calls.clear()
        node, source = self._owners[-1]
        exempt = _exemption(node)
        if exempt is None:
            self.exempted += len(programs)
            return
        self.checked += len(programs)
        if source is not None:
            self._sources.add(source)
        for f in analyse_all(programs, select=self.select, ignore=[*self.ignore, *exempt]):
            self._found.setdefault((f.code, f.location, f.message), f)

    @contextmanager
    def _owned_by(self, node: Any, source: Path | None) -> Iterator[None]:
        self._flush()
        self._owners.append((node, source))
        try:
            yield
        finally:
            try:
                self._flush()
            finally:
                self._owners.pop()

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        source = collector.path if isinstance(collector, pytest.Module) else None
        with self._owned_by(collector, source):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        with self._owned_by(item, item.path):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        try:
            return (yield)
        finally:
            # Before teardown, which may collect the test's compiled functions
            # (see `_flush`).
            self._flush()

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[object], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        # A wider-scoped fixture belongs to its module, class or session, not to
        # the test that happens to set it up first.
        with self._owned_by(request.node, _source_of(fixturedef.func)):
            return (yield)

    # ----------------------------------------------------------------------- #
    # Which tests ran, and marker arguments
    # ----------------------------------------------------------------------- #
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            self._test_files.add(item.path)
            self._partial.add(item.path)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        from subsetgrad.lint.config import ConfigError, check_codes

        for item in session.items:
            self._test_files.add(item.path)
            for mark in item.iter_markers(MARKER):
                where = f"{item.nodeid}: @pytest.mark.{MARKER}"
                if mark.kwargs or not all(isinstance(a, str) for a in mark.args):
                    raise pytest.UsageError(f"{where} takes rule codes as strings only")
                try:
                    check_codes([c for a in mark.args for c in _codes(a)], where)
                except ConfigError as exc:
                    raise pytest.UsageError(str(exc)) from None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" and not report.skipped:
            self._ran.add(report.nodeid)

    # ----------------------------------------------------------------------- #
    # The end: gate, exit status, report
    # ----------------------------------------------------------------------- #
    @pytest.hookimpl(trylast=True)  # after session-scoped fixtures are torn down
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from subsetgrad.lint import report

        try:
            self._flush()
        finally:
            self._exit.close()
        for item in session.items:
            if item.nodeid not in self._ran:
                self._partial.add(item.path)
        self.findings = self._gate()
        if report.failing(self.findings) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _gate(self) -> list[Finding]:
        from subsetgrad.lint import report
        from subsetgrad.lint.findings import Finding
        from subsetgrad.lint.suppress import UNUSED

        found = sorted(self._found.values(), key=Finding.sort_key)
        # Suppressions are matched by path string: spell each file as its findings do.
        spelled = {Path(f.location.path).resolve(): f.location.path for f in found if f.location}
        files = sorted({spelled.get(p.resolve(), str(p.resolve())) for p in self._sources})
        gated = report.gate(
            found, files=files, config=self.lint_config, select=self.select, ignore=self.ignore
        )
        return [f for f in gated if f.code != UNUSED.code or self._complete(f.location)]

    def _complete(self, location: Location | None) -> bool:
        """Whether every test that could use a suppression at `location` ran."""
        if location is None:
            return not self._partial
        path = Path(location.path).resolve()
        partial = {p.resolve() for p in self._partial}
        if path in partial:
            return False
        return not partial or path in {p.resolve() for p in self._test_files}

    def pytest_report_header(self, config: pytest.Config) -> str:
        select = ", ".join(self.select) if self.select is not None else "default"
        details = f"select: {select}, ignore: {', '.join(self.ignore) or 'none'}"
        if self.lint_config.path is not None:
            try:
                shown = self.lint_config.path.relative_to(self.rootpath).as_posix()
            except ValueError:
                shown = str(self.lint_config.path)
            details += f", config: {shown}"
        return f"subsetgrad: checking every compiled PyTensor graph ({details})"

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, config: pytest.Config
    ) -> None:
        from subsetgrad.lint import emit, report

        verbose = config.get_verbosity() > 0
        failing = report.failing(self.findings)
        # Info-only findings (the rewrite is active) are news only when asked for.
        if not failing and not (verbose and self.findings):
            if verbose:
                graphs = "graph" if self.checked == 1 else "graphs"
                note = f", {self.exempted} exempted by marker" if self.exempted else ""
                terminalreporter.write_line(
                    f"subsetgrad: {self.checked} compiled {graphs} checked{note}, no findings"
                )
            return
        terminalreporter.write_sep("=", "subsetgrad", red=failing, yellow=not failing)
        for line in emit.text(self.findings).splitlines():
            terminalreporter.write_line(line)
        if failing:
            # Counted in pytest's last line ("3 passed, 2 subsetgrad findings (1 failing)"),
            # which would otherwise say only that every test passed, above a failing exit.
            # The count is the block's; info findings shown there do not fail the run.
            # trylast: other plugins' summaries read every entry of `stats` as a test report.
            count = sum(1 for f in self.findings if report.failing([f]))
            key = "subsetgrad finding" if len(self.findings) == 1 else "subsetgrad findings"
            if count < len(self.findings):
                key += f" ({count} failing)"
            terminalreporter.stats.setdefault(key, []).extend(self.findings)
