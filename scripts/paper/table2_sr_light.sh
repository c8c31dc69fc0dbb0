#!/usr/bin/env bash
# Table 2 of the paper: train the x4 SRResNet and EDSR-8-128 configurations, test them, print the table.
# Settings: environment variables, listed with their defaults by --help.  Driver: scripts/paper/run.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # root, py: the .venv (made once), or $PYTHON
exec "$py" "$root/scripts/paper/run.py" table2 "$@"
