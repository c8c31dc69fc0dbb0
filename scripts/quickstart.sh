#!/usr/bin/env bash
# The first command to run: installs what is needed (the same .venv as scripts/test.sh), then trains and
# compares ResNet-20 / Basis / Factor / Group on Digits and a small EDSR / Basis / Factor / Bicubic on
# Photos x2, printing a table per task; everything lands under experiment/quickstart/.
# Usage: scripts/quickstart.sh [--reset] [--out DIR] [--smoke] [--only NAME,...]
# (--smoke: tiny runs under experiment/quickstart_smoke/; a relative --out is taken from the current folder)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec "$py" "$root/scripts/quickstart.py" "$@"
