#!/usr/bin/env bash
# The first command to run: installs what is needed (the same .venv as scripts/test.sh), then trains and
# compares ResNet-20 / Basis / Factor / Group on Digits and a small EDSR / Basis / Factor / Bicubic on
# Photos x2, printing a table per task; everything lands under experiment/quickstart/.
# Usage: scripts/quickstart.sh [--reset] [--out DIR] [--smoke]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$root"
exec "$py" scripts/quickstart.py "$@"
