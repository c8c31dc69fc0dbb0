#!/usr/bin/env bash
# Create (or reuse) the virtual environment, install the project, lint it and run the whole test suite.
# Usage: scripts/test.sh [extra pytest arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.requirements.sha256"
want="$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$py" -m pip install -q --upgrade pip
    "$py" -m pip install -q -r requirements.txt
    "$py" -m pip install -q --no-deps -e .
    echo "$want" > "$stamp"
fi
"$py" -m ruff check .
"$py" -m pytest "$@"
