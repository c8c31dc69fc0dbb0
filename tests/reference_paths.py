"""Where the reference facts the tests check against (official counts, state_dict listings, command lines,
golden vectors) live: ``tests/data/official`` inside the repository, so that a plain clone is enough."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(__file__).resolve().parent / "data" / "official"
