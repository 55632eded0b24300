"""``python -m benchmarks.cli``: the gradfree command."""

import sys

from benchmarks.cli import main

sys.exit(main())
