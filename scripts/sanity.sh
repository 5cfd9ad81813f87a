#!/usr/bin/env bash
# ansible-test sanity, offline. ansible-test needs a real .../ansible_collections/cms/patching
# directory (not a symlink) with amazon.aws in the same ansible_collections root, and each test's
# venv first downloads get-pip, which cannot be reached here: a stand-in uses ensurepip + PyPI.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="${CMS_VENV:-$root/.venv}"
py="$venv/bin/python"
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
site=$("$py" -c 'import ansible_collections.amazon.aws as m, os; print(os.path.dirname(os.path.dirname(list(m.__path__)[0])))')

cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for v in 24_2 25_0 25_1 25_2 25_3; do
  cat > "$cache/get_pip_$v.py" <<'PY'
# Stand-in for get-pip.py (its host is unreachable here): bootstrap pip with ensurepip, then install.
import subprocess
import sys
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade"], check=True)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]  # get-pip's own flags
subprocess.run([sys.executable, "-m", "pip", "install"] + args, check=True)
PY
done

# Outside the checkout (inside it, ansible-test would ask git and see only ignored files), and one directory per
# run, so two runs at once (two interpreters) never delete each other's copy.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cms-patching-sanity.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
work="$tmp/ansible_collections"
dest="$work/cms/patching"
mkdir -p "$dest" "$work/amazon"
ln -sfn "$site/amazon/aws" "$work/amazon/aws"
cd "$root"
git ls-files -co --exclude-standard -z | grep -zv '^collections/' | xargs -0 cp --parents -t "$dest"
cd "$dest"
# Drop pip's download chatter from the venv set-up; keep every test line and error. The exit status is ansible-test's.
set +e
"$venv/bin/ansible-test" sanity --python "$pyver" --color no "$@" 2>&1 | grep -vE \
  '^(WARNING: Location|Collecting |  Downloading |     |Processing |Looking in links|Installing collected|Successfully installed|  Attempting uninstall|    Found existing|    Uninstalling|Requirement already|Using cached pip)'
rc=${PIPESTATUS[0]}
exit "$rc"
