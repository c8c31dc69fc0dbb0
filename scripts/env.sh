# Sourced by scripts/test.sh, scripts/quickstart.sh, scripts/digits_basis_init.sh and scripts/paper/*.sh:
# create (or reuse) the virtual environment and install requirements.txt and the package into it when
# either file changed since the last install.
# Sets: root (the repository), venv, py (its python).  VENV=/path chooses another environment;
# PYTHON=/path/to/python uses that interpreter as it is (an environment that already has the
# requirements: nothing is created or installed).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${PYTHON:-}" ]; then
    py="$PYTHON"
    venv=""
else
    venv="${VENV:-$root/.venv}"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv"
    fi
    py="$venv/bin/python"
    stamp="$venv/.requirements.sha256"
    want="$(cat "$root/requirements.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing requirements.txt and the package into $venv (once) ..." >&2
        "$py" -m pip install -q --upgrade pip
        "$py" -m pip install -q -r "$root/requirements.txt"
        "$py" -m pip install -q --no-deps -e "$root"
        echo "$want" > "$stamp"
    fi
fi
