"""Inline suppressions, ``# subsetgrad: ignore[SG201]``, and SG901 for stale ones."""

from __future__ import annotations

import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass

from subsetgrad.lint.findings import Finding, Location, Severity
from subsetgrad.lint.registry import Rule, add
from subsetgrad.lint.source import absolute

PATTERN = re.compile(r"#\s*subsetgrad:\s*ignore(?:\[(?P<codes>[^\]]*)\])?", re.I)

UNUSED = Rule(
    code="SG901",
    name="unused-suppression",
    summary="A `# subsetgrad: ignore` comment that suppresses nothing.",
    hint="Remove the comment, or the codes in it that no longer match a finding.",
    severity=Severity.WARNING,
    check=None,
    doc="""## What it does
Flags a ``# subsetgrad: ignore[...]`` comment (or a code inside one) that
suppressed no finding in this run.

## Why is this bad?
A stale suppression hides the next real finding on that line, and tells the
reader about a problem that is gone.

## Example
```python
import numpy as np
import pytensor

W = pytensor.shared(np.ones((10, 2)), name="W")  # subsetgrad: ignore[SG201]
f = pytensor.function([], W.sum())
```

## Use instead
```python
import numpy as np
import pytensor

W = pytensor.shared(np.ones((10, 2)), name="W")
f = pytensor.function([], W.sum())
```

## Rewrite
Not a graph rule: nothing to rewrite.
""",
)
add(UNUSED)


@dataclass(frozen=True)
class Suppression:
    path: str
    line: int
    col: int
    codes: tuple[str, ...]  # empty: every code


def suppressions_in(path: str) -> list[Suppression]:
    """The suppression comments of a Python file (comments only, not strings)."""
    found: list[Suppression] = []
    try:
        with tokenize.open(path) as fh:
            for tok in tokenize.generate_tokens(fh.readline):
                if tok.type != tokenize.COMMENT:
                    continue
                m = PATTERN.search(tok.string)
                if m:
                    codes = tuple(
                        c.strip().upper() for c in (m.group("codes") or "").split(",") if c.strip()
                    )
                    found.append(Suppression(path, tok.start[0], tok.start[1] + 1, codes))
    except (OSError, SyntaxError, tokenize.TokenError, UnicodeDecodeError):
        return []
    return found


def apply(
    findings: Iterable[Finding], files: Iterable[str], *, report_unused: bool = True
) -> list[Finding]:
    """Drop suppressed findings; add SG901 for suppressions (or codes) that matched none."""
    findings = list(findings)
    paths = {f.location.path for f in findings if f.location} | {absolute(p) for p in files}
    by_line: dict[tuple[str, int], Suppression] = {}
    for path in sorted(paths):
        for s in suppressions_in(path):
            by_line[(s.path, s.line)] = s
    used: dict[tuple[str, int], set[str]] = {}
    kept: list[Finding] = []
    for f in findings:
        loc = f.location
        hit = by_line.get((loc.path, loc.line)) if loc else None
        if hit is not None and (not hit.codes or any(f.code.startswith(c) for c in hit.codes)):
            used.setdefault((hit.path, hit.line), set()).add(f.code)
            continue
        kept.append(f)
    if report_unused:
        for key, s in sorted(by_line.items()):
            hits = used.get(key, set())
            stale = [c for c in s.codes if not any(h.startswith(c) for h in hits)]
            if (not s.codes and not hits) or stale:
                what = (
                    "it suppresses nothing" if not hits else f"{', '.join(stale)} matched nothing"
                )
                kept.append(
                    UNUSED.finding(
                        f"unused suppression: {what} on this line.",
                        Location(s.path, s.line, s.col),
                    )
                )
    return sorted(kept, key=Finding.sort_key)
