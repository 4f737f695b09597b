"""``python -m medreason_lib.course``: ``make course`` (``medreason_lib.course.main``)."""

import sys

from medreason_lib.course import main

sys.exit(main())
