"""Example scripts that ship with subsetgrad; ``subsetgrad example`` prints one."""
