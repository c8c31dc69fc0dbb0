#!/usr/bin/env bash
# The #Parameters and compression columns of Tables 2, 3 and 5, counted in one Python process.
# Settings: environment variables, listed with their defaults by --help.  Driver: scripts/paper/run.py.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"  # root, py: the .venv (made once), or $PYTHON
exec "$py" "$root/scripts/paper/run.py" params "$@"
