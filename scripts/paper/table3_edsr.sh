#!/usr/bin/env bash
# Table 3 of the paper: train the EDSR configurations (x3/x4 from x2), test them, print the table.
# Settings: environment variables, listed with their defaults by --help.  Driver: scripts/paper/run.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # root, py: the .venv (made once), or $PYTHON
exec "$py" "$root/scripts/paper/run.py" table3 "$@"
