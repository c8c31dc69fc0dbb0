"""Where the read-only reference facts (official counts, state_dict listings, golden vectors) live.

The checkout sits beside ``shared/`` (``../shared/reference``); ``FILTER_BASIS_REFERENCE`` overrides it,
and a ``shared/reference`` inside the checkout is used when present (as on a GPU machine, where only
the checkout travels).
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _find_reference() -> Path:
    override = os.environ.get("FILTER_BASIS_REFERENCE")
    if override:
        return Path(override)
    inside = ROOT / "shared" / "reference"
    return inside if inside.is_dir() else ROOT.parent / "shared" / "reference"


REFERENCE = _find_reference()
