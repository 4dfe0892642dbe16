"""What every benchmark reports about the machine it ran on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any


def machine() -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "versions": {
            "python": platform.python_version(),
            **{d: version(d) for d in ("pytensor", "numba", "numpy", "subsetgrad")},
        },
    }
