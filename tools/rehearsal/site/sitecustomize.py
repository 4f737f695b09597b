"""Loaded by every Python process a rehearsal starts (this folder is on its PYTHONPATH).

Outside a rehearsal (``MEDREASON_REHEARSAL`` unset) it does nothing. Inside one it loads
``tools/rehearsal/simulate.py`` and installs the simulated runtime (see that module).
"""

import os

if os.environ.get("MEDREASON_REHEARSAL"):
    import importlib.util
    import sys

    _path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "simulate.py")
    _spec = importlib.util.spec_from_file_location("_medreason_rehearsal", _path)
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["_medreason_rehearsal"] = _module
    _spec.loader.exec_module(_module)
    _module.install()
