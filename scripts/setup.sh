#!/usr/bin/env bash
# Create or refresh the project's virtualenv. Does nothing when it is already current
# (same interpreter, same requirement files). Needs only python3 and pip reaching PyPI.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}

# pyenv shims (python3.12, ...) do not run unless pyenv selects that version: fall back to
# the interpreter under pyenv's versions/ directory.
if ! "$python" -c 'import sys' >/dev/null 2>&1; then
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  found=$(printf '%s\n' "$root"/versions/*/bin/"$python" | grep -v '\*' | sort -V | tail -n 1 || true)
  [ -n "$found" ] || { echo "setup: interpreter '$python' does not run and is not under pyenv" >&2; exit 2; }
  python=$found
fi
# The base interpreter, even when PATH puts this venv's own python3 first.
python=$("$python" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')

want="$python $("$python" -c 'import sys; print(sys.version.split()[0])') $(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
stamp="$venv/.cms-setup"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/ansible-playbook" ]; then
  echo "setup: $venv is current ($want)"
  exit 0
fi
if [ -x "$venv/bin/python" ] && ! grep -q "^$python " "$stamp" 2>/dev/null; then
  echo "setup: interpreter changed, recreating $venv"
  rm -rf "$venv"
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
echo "$want" > "$stamp"
echo "setup: $venv ready ($want)"
