"""Print the status that run.json records for the run a main.py command line trains (see docs/cluster.md).

    python scripts/cluster/run_status.py --save NAME [--dir_save DIR] [any other main.py options]

prints one word: ``started``, ``training``, ``finished``, ``preempted``, ``interrupted`` or ``stopped``
(the run record's status), ``absent`` (no such folder) or ``unknown`` (not an experiment folder).  The
SLURM script requeues its job when it prints ``preempted``.  Exit status 0 in every case.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from filter_basis.engine.options import REPO_ROOT  # noqa: E402
from filter_basis.engine.record import NotAnExperiment, read_run  # noqa: E402


def status(argv: list) -> str:
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    parser.add_argument("--dir_save", default=str(REPO_ROOT / "experiment"))
    parser.add_argument("--save", default="test")
    parser.add_argument("--load", default="")
    args, _ = parser.parse_known_args(argv)
    name = args.load if args.load not in ("", ".") else args.save
    folder = Path(args.dir_save) / name
    if not os.path.exists(folder):
        return "absent"
    try:
        return read_run(folder).status
    except NotAnExperiment:
        return "unknown"


if __name__ == "__main__":
    print(status(sys.argv[1:]))
