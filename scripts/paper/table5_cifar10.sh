#!/usr/bin/env bash
# Table 5 of the paper: train the CIFAR-10 configurations, test each best model, print the table.
# Settings: environment variables, listed with their defaults by --help.  Driver: scripts/paper/run.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # root, py: the .venv (made once), or $PYTHON
exec "$py" "$root/scripts/paper/run.py" table5 "$@"
