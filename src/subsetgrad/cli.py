"""The ``subsetgrad`` command line: one function per subcommand, listed in `COMMANDS`.

Subcommands import PyTensor (and anything heavy) inside their function, so that
parsing arguments and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
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
# The table of subcommands
# --------------------------------------------------------------------------- #
#: name -> (one-line help, adds the subcommand's arguments, runs it and returns the exit code)
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
] = {
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
        command.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 after ``--help``, 2 on bad usage)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        print("subsetgrad: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        message = lines[0] if lines else type(exc).__name__
        if not isinstance(exc, ValueError | OSError):
            message = f"{type(exc).__name__}: {message}"
        print(f"subsetgrad {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    return status


if __name__ == "__main__":
    sys.exit(main())
