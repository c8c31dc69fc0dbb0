#!/usr/bin/env bash
# The official demo.sh of both trees: test the checkpoints in MODEL_DIR and print the tables.
# Settings: environment variables, listed with their defaults by --help.  Driver: scripts/paper/run.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # root, py: the .venv (made once), or $PYTHON
exec "$py" "$root/scripts/paper/run.py" evaluate "$@"
