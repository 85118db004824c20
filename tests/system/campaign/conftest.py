"""The campaign runners (`camp_faults`, `camp_fuzz`) live next to their tests and are importable
from them; `scripts/soak` and `scripts/fuzz` run the same modules as programs."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
