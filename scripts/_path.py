"""Lets the scripts import ``core`` when run as ``python scripts/NAME.py`` from anywhere."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
