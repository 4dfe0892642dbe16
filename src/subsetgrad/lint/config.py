"""``[tool.subsetgrad]`` in pyproject.toml: select, ignore and per-file ignores."""

from __future__ import annotations

import fnmatch
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from subsetgrad.lint.registry import unknown_codes

KEYS = {"select", "ignore", "per-file-ignores"}


class ConfigError(Exception):
    """Malformed configuration; the message names the file and the problem."""


@dataclass(frozen=True)
class Config:
    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    per_file_ignores: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # The directory per-file patterns are relative to (the pyproject's).
    root: Path = field(default_factory=Path.cwd)
    path: Path | None = None

    def ignored_in(self, file: str) -> tuple[str, ...]:
        """Codes or prefixes ignored for `file` by per-file-ignores."""
        try:
            rel = Path(file).resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            rel = Path(file).as_posix()
        codes: list[str] = []
        for pattern, ignored in self.per_file_ignores.items():
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(Path(rel).name, pattern):
                codes.extend(ignored)
        return tuple(codes)


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml with a ``[tool.subsetgrad]`` table, from `start` upward."""
    start = start.resolve()
    for directory in [start, *start.parents] if start.is_dir() else start.parents:
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{candidate}: invalid TOML: {exc}") from None
            if "subsetgrad" in data.get("tool", {}):
                return candidate
    return None


def load(path: Path) -> Config:
    """Read and validate ``[tool.subsetgrad]`` from `path`."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    table = data.get("tool", {}).get("subsetgrad", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.subsetgrad] must be a table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r} in [tool.subsetgrad] "
            f"(known: {', '.join(sorted(KEYS))})"
        )
    select = _codes(table, "select", path) if "select" in table else None
    ignore = _codes(table, "ignore", path) if "ignore" in table else ()
    per_file = table.get("per-file-ignores", {})
    if not isinstance(per_file, dict):
        raise ConfigError(f"{path}: per-file-ignores must be a table of pattern = [codes]")
    per_file_ignores = {
        str(pattern): _codes(per_file, pattern, path, f"per-file-ignores.{pattern!r}")
        for pattern in per_file
    }
    return Config(select, ignore, per_file_ignores, path.parent, path)


def _codes(
    table: dict[str, object], key: str, path: Path, label: str | None = None
) -> tuple[str, ...]:
    value = table[key]
    label = label or key
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {label} must be a list of rule codes")
    check_codes(value, f"{path}: {label}")
    return tuple(value)


def check_codes(codes: list[str] | tuple[str, ...], where: str) -> None:
    """Raise ConfigError naming the first entry that matches no rule code."""
    bad = unknown_codes(codes)
    if bad:
        raise ConfigError(f"{where}: unknown rule code {bad[0]!r}")
