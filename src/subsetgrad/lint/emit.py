"""Output formats: text (ruff-like), json, sarif (2.1.0) and github annotations."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from subsetgrad.lint.findings import Finding, Location, Severity
from subsetgrad.lint.registry import RULES

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/subsetgrad/"


def display_path(path: str, cwd: Path | None = None) -> str:
    """`path` relative to the working directory when it is below it, like ruff."""
    cwd = cwd or Path.cwd()
    try:
        return Path(path).resolve().relative_to(cwd.resolve()).as_posix()
    except ValueError:
        return path


def _where(loc: Location | None) -> str:
    return f"{display_path(loc.path)}:{loc.line}:{loc.col}" if loc else "<unknown>"


def text(findings: Sequence[Finding]) -> str:
    lines: list[str] = []
    for f in findings:
        tag = "" if f.severity is Severity.WARNING else f" [{f.severity.value}]"
        lines.append(f"{_where(f.location)}: {f.code}{tag} {f.message}")
        lines.append(f"  help: {f.hint}")
        for rel in f.related:
            lines.append(f"  note: see {_where(rel)}")
    lines.append(summary(findings))
    return "\n".join(lines) + "\n"


def summary(findings: Sequence[Finding]) -> str:
    if not findings:
        return "All checks passed!"
    counts = Counter(f.severity.value for f in findings)
    parts = [f"{counts[s.value]} {s.value}" for s in Severity if counts[s.value]]
    noun = "finding" if len(findings) == 1 else "findings"
    return f"Found {len(findings)} {noun} ({', '.join(parts)})."


def as_json(findings: Sequence[Finding]) -> str:
    records = []
    for f in findings:
        d = f.to_dict()
        if f.location:
            d["path"] = display_path(f.location.path)
        d["related"] = [
            {**r, "path": display_path(str(r["path"]))}
            for r in d["related"]  # type: ignore[attr-defined]
        ]
        records.append(d)
    return json.dumps(records, indent=2) + "\n"


_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _sarif_location(loc: Location) -> dict[str, object]:
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": display_path(loc.path)},
            "region": {"startLine": loc.line, "startColumn": loc.col},
        }
    }


def sarif(findings: Sequence[Finding]) -> str:
    from subsetgrad._version import __version__

    codes = sorted(RULES)
    rules = [
        {
            "id": code,
            "name": RULES[code].name,
            "shortDescription": {"text": RULES[code].summary},
            "fullDescription": {"text": RULES[code].summary},
            "help": {"text": RULES[code].hint, "markdown": RULES[code].doc},
            "defaultConfiguration": {"level": _LEVEL[RULES[code].severity]},
        }
        for code in codes
    ]
    results = []
    for f in findings:
        result: dict[str, object] = {
            "ruleId": f.code,
            "ruleIndex": codes.index(f.code),
            "level": _LEVEL[f.severity],
            "message": {"text": f"{f.message} {f.hint}"},
        }
        if f.location:
            result["locations"] = [_sarif_location(f.location)]
        if f.related:
            result["relatedLocations"] = [
                {"id": i, **_sarif_location(r)} for i, r in enumerate(f.related)
            ]
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "subsetgrad",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def _escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def github(findings: Sequence[Finding]) -> str:
    lines = []
    for f in findings:
        kind = {"error": "error", "warning": "warning", "info": "notice"}[f.severity.value]
        props = [f"title={_escape(f'{f.code} {f.name}', prop=True)}"]
        if f.location:
            props = [
                f"file={_escape(display_path(f.location.path), prop=True)}",
                f"line={f.location.line}",
                f"col={f.location.col}",
                *props,
            ]
        lines.append(f"::{kind} {','.join(props)}::{_escape(f'{f.message}\n{f.hint}')}")
    return "\n".join(lines) + ("\n" if lines else "")


FORMATS: dict[str, Callable[[Sequence[Finding]], str]] = {
    "text": text,
    "json": as_json,
    "sarif": sarif,
    "github": github,
}
