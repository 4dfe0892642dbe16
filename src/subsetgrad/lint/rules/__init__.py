"""Rule families, one module each; importing this package registers them all."""

from subsetgrad.lint import suppress
from subsetgrad.lint.rules import dense, optimizers, paths

__all__ = ["dense", "optimizers", "paths", "suppress"]
