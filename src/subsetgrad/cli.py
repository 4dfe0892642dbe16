"""The ``subsetgrad`` command line: one function per subcommand, listed in `COMMANDS`.

Subcommands import PyTensor (and anything heavy) inside their function, so that
parsing arguments and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (try '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --------------------------------------------------------------------------- #
# demo
# --------------------------------------------------------------------------- #
def _demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--steps", type=_positive_int, default=300, help="training steps per run (default: 300)"
    )
    parser.add_argument(
        "--batch", type=_positive_int, default=256, help="skip-gram pairs per step (default: 256)"
    )
    parser.add_argument(
        "--mode", default="NUMBA", help="PyTensor mode to compile with (default: NUMBA)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed for the initial tables and batches (default: 0)"
    )


def demo(args: argparse.Namespace) -> int:
    """Train the bundled skip-gram example dense and rewritten, and report."""
    from subsetgrad.demo import format_report, run_demo

    result = run_demo(steps=args.steps, batch=args.batch, mode=args.mode, seed=args.seed)
    print(format_report(result))
    return 0


# --------------------------------------------------------------------------- #
# check
# --------------------------------------------------------------------------- #
FORMATS = ("text", "json", "sarif", "github")


def _codes(text: str) -> list[str]:
    return [c.strip().upper() for c in text.split(",") if c.strip()]


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="a Python file, or module:callable (a factory returning a compiled function, "
        "outputs or updates)",
    )
    parser.add_argument(
        "-m",
        dest="modules",
        action="append",
        default=[],
        metavar="MODULE",
        help="run a module as a script (like python -m); may repeat",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output format")
    parser.add_argument(
        "--select",
        type=_codes,
        default=None,
        metavar="CODES",
        help="comma-separated rule codes or prefixes to enable (replaces the config's)",
    )
    parser.add_argument(
        "--ignore",
        type=_codes,
        default=None,
        metavar="CODES",
        help="comma-separated rule codes or prefixes to disable",
    )
    parser.add_argument(
        "--exit-zero", action="store_true", help="exit 0 even when there are findings"
    )
    parser.add_argument(
        "--run",
        action="store_true",
        help="let the target run to completion (default: stop at the first call of a "
        "compiled function, once the graphs are built)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="PYPROJECT",
        help="pyproject.toml to read [tool.subsetgrad] from (default: found from the first "
        "target's folder upward)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")


class UsageError(Exception):
    """A problem with the command line itself."""


def check(args: argparse.Namespace) -> int:
    """Run the targets under the recorder and report the findings."""
    from subsetgrad.lint import analyse_all, emit, report, target
    from subsetgrad.lint import config as config_mod

    if not args.targets and not args.modules:
        raise UsageError("no target given (a file, -m MODULE, or module:callable)")
    for option in ("select", "ignore"):
        if getattr(args, option) is not None:
            config_mod.check_codes(getattr(args, option), f"--{option}")
    targets = target.parse(args.targets, args.modules)
    found = args.config or config_mod.find_pyproject(targets[0].directory)
    if args.config is not None and not args.config.is_file():
        raise config_mod.ConfigError(f"{args.config}: no such file")
    config = config_mod.load(found) if found else config_mod.Config()
    select, ignore = report.effective_selection(config, args.select, args.ignore)

    outcome = target.run(targets, run_fully=args.run)
    findings = analyse_all(
        [*outcome.recording.programs, *outcome.returned], select=select, ignore=ignore
    )
    findings = report.gate(
        findings, files=outcome.files, config=config, select=select, ignore=ignore
    )
    sys.stdout.write(emit.FORMATS[args.format](findings))
    # On stderr, like ruff's notices: stdout stays the findings, in any format.
    for stop in outcome.stops:
        where = (
            f"{emit.display_path(stop.location.path)}:{stop.location.line}"
            if stop.location
            else stop.target.label
        )
        print(
            f"subsetgrad check: note: stopped at {where}, the first call of a compiled "
            "function; functions compiled after it are not checked (--run checks the rest)",
            file=sys.stderr,
        )
    return 1 if report.failing(findings) and not args.exit_zero else 0


# --------------------------------------------------------------------------- #
# rules / rule CODE
# --------------------------------------------------------------------------- #
def _rules_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="text: one line per rule; json: a list of records; markdown: the whole rule "
        "reference, every rule's documentation (docs/rules.md is this output)",
    )


def rules(args: argparse.Namespace) -> int:
    """List every rule: code, name, default severity and summary (or the whole reference)."""
    import json

    from subsetgrad.lint.registry import RULES
    from subsetgrad.lint.rules import dense  # noqa: F401  (registers every rule)

    if args.format == "markdown":
        from subsetgrad.lint.docs import markdown

        sys.stdout.write(markdown())
        return 0
    if args.format == "json":
        print(
            json.dumps(
                [
                    {
                        "code": r.code,
                        "name": r.name,
                        "severity": r.severity.value,
                        "summary": r.summary,
                        "default": r.default_enabled,
                    }
                    for r in RULES.values()
                ],
                indent=2,
            )
        )
        return 0
    for code in sorted(RULES):
        r = RULES[code]
        print(f"{r.code}  {r.name:<28} {r.severity.value:<8} {r.summary}")
    return 0


def _rule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("code", help="a rule code, e.g. SG101, or its name")


def rule(args: argparse.Namespace) -> int:
    """Print one rule's documentation."""
    from subsetgrad.lint.registry import RULES
    from subsetgrad.lint.rules import dense  # noqa: F401  (registers every rule)

    wanted = args.code.strip()
    match = RULES.get(wanted.upper()) or next(
        (r for r in RULES.values() if r.name == wanted.lower()), None
    )
    if match is None:
        raise UsageError(f"unknown rule {wanted!r} (see 'subsetgrad rules')")
    print(f"# {match.code} {match.name}\n\n{match.summary}\n\n{match.doc}\n")
    return 0


# --------------------------------------------------------------------------- #
# example
# --------------------------------------------------------------------------- #
EXAMPLE = "train_embeddings.py"


def _example_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        f"save it and check it:\n  subsetgrad example > {EXAMPLE}\n  subsetgrad check {EXAMPLE}"
    )


def example(args: argparse.Namespace) -> int:
    """Print the bundled example script (shipped in the package, in subsetgrad/examples)."""
    from importlib.resources import files

    sys.stdout.write(files("subsetgrad.examples").joinpath(EXAMPLE).read_text())
    return 0


# --------------------------------------------------------------------------- #
# The table of subcommands
# --------------------------------------------------------------------------- #
#: name -> (one-line help, adds the subcommand's arguments, runs it and returns the exit code)
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
    "check": (
        "run a training script (or module, or factory) and report subset-gradient traps",
        _check_arguments,
        check,
    ),
    "rules": ("list every lint rule", _rules_arguments, rules),
    "rule": ("print the documentation of one rule", _rule_arguments, rule),
    "example": (
        "print a small training script with one known finding, to try 'subsetgrad check' on",
        _example_arguments,
        example,
    ),
    "demo": (
        "train a small embedding model dense and rewritten; compare speed and results",
        _demo_arguments,
        demo,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The parser for the whole command line."""
    parser = _Parser(
        prog="subsetgrad",
        description="Exact subset-gradient updates for lookup tables in PyTensor graphs.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(command)
        command.set_defaults(handler=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 after ``--help``, 2 on bad usage)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        status: int = args.handler(args)
    except KeyboardInterrupt:
        print("subsetgrad: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        lines = str(exc).strip().splitlines()
        message = lines[0] if lines else type(exc).__name__
        if not _expected(exc):
            message = f"{type(exc).__name__}: {message}"
            if hasattr(args, "debug") and not args.debug:
                message += " (--debug shows the traceback)"
        print(f"subsetgrad {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return status


def _expected(exc: Exception) -> bool:
    """Errors whose message alone says what is wrong."""
    names = {"UsageError", "ConfigError", "TargetError"}
    return isinstance(exc, ValueError | OSError) or type(exc).__name__ in names


if __name__ == "__main__":
    sys.exit(main())
