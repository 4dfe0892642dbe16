"""``python -m subsetgrad``: the same command line as ``subsetgrad``."""

import sys

from subsetgrad.cli import main

sys.exit(main())
