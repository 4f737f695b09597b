"""``python -m medreason_lib`` (and ``accelerate launch -m medreason_lib``): the command line."""

import sys

from medreason_lib.cli import main

sys.exit(main())
