# Sourced by scripts/test.sh and scripts/quickstart.sh: create (or reuse) the virtual environment and
# install requirements.txt and the package into it when either file changed since the last install.
# Sets: root (the repository), venv, py (its python).  VENV=/path chooses another environment.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
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
