"""Puts this checkout's own package first on ``sys.path`` for the study scripts beside it.

A study script runs where robustmsa may not be installed at all (a ``ray job submit`` onto stock
Ray nodes, whose working dir is an unpacked copy of this folder) or where another copy is
installed; either way the script must run the package of the checkout it belongs to.
Importing this module does that; the study then ships that same copy to every trial
(`robustmsa.search.study.init_ray`).
"""

import sys
from pathlib import Path

PLATFORM = Path(__file__).resolve().parent.parent / "platform"

if (PLATFORM / "robustmsa").is_dir() and str(PLATFORM) not in sys.path:
    sys.path.insert(0, str(PLATFORM))
