"""``python -m benchmarks [NAME] [ARGS...]``: run one benchmark, or all of them.

Every ``bench_<name>.py`` module in this folder is a benchmark exposing
``main(argv) -> int``. Without NAME all of them run in turn; ARGS go to each.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def available() -> list[str]:
    """Names of the benchmarks in this folder, sorted."""
    here = Path(__file__).resolve().parent
    return sorted(path.stem.removeprefix("bench_") for path in here.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    names = available()
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__)
        print("benchmarks:", ", ".join(names))
        return 0
    if args and not args[0].startswith("-"):
        if args[0] not in names:
            print(f"unknown benchmark {args[0]!r}; have: {', '.join(names)}", file=sys.stderr)
            return 2
        names, args = [args[0]], args[1:]
    status = 0
    for name in names:
        module = importlib.import_module(f"{__package__}.bench_{name}")
        status = status or module.main(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
