"""What the lint reports: findings as plain frozen data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    """How bad a finding is. ``info`` findings do not fail `subsetgrad check`."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, order=True)
class Location:
    """A place in the user's source: 1-based line and column."""

    path: str
    line: int
    col: int = 1

    def __init__(self, path: str, line: int, col: int = 1) -> None:
        # Straight into the instance dict: the generated frozen __init__ calls
        # object.__setattr__ per field, which shows on thousands of findings.
        d = self.__dict__
        d["path"], d["line"], d["col"] = path, line, col

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"

    @property
    def short(self) -> str:
        """``file.py:12``, for naming another line inside a message."""
        return f"{self.path.replace(chr(92), '/').rsplit('/', 1)[-1]}:{self.line}"


@dataclass(frozen=True)
class Finding:
    """One reported trap."""

    code: str
    name: str
    severity: Severity
    message: str
    hint: str
    location: Location | None
    # Other lines that take part (the second lookup, the missed path).
    related: tuple[Location, ...] = field(default=())

    def __init__(
        self,
        code: str,
        name: str,
        severity: Severity,
        message: str,
        hint: str,
        location: Location | None,
        related: tuple[Location, ...] = (),
    ) -> None:
        d = self.__dict__  # as in Location
        d["code"], d["name"], d["severity"], d["message"] = code, name, severity, message
        d["hint"], d["location"], d["related"] = hint, location, related

    def sort_key(self) -> tuple[str, int, int, str]:
        loc = self.location
        return (loc.path, loc.line, loc.col, self.code) if loc else ("", 0, 0, self.code)

    def to_dict(self) -> dict[str, object]:
        loc = self.location
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "path": loc.path if loc else None,
            "line": loc.line if loc else None,
            "col": loc.col if loc else None,
            "message": self.message,
            "hint": self.hint,
            "related": [{"path": r.path, "line": r.line, "col": r.col} for r in self.related],
        }
