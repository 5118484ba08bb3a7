"""`python -m app.cli`: the same as `lethe`."""

import sys

from app.cli import main

sys.exit(main())
