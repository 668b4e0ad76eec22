"""`python -m tally.bench`: the same as `tally bench`."""

from __future__ import annotations

import sys

from tally.bench.command import main

sys.exit(main())
