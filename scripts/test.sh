#!/usr/bin/env bash
# Create (or reuse) the virtual environment, install the project, lint it and run the whole test suite.
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$root"
"$py" -m ruff check .
"$py" -m pytest "$@"
