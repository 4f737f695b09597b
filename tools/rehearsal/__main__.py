"""``python -m tools.rehearsal``: see ``tools.rehearsal.runner``."""

import sys

from .runner import main

sys.exit(main())
