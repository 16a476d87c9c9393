# Shared by up.sh and test.sh: create .venv if needed and (re)install the project when setup.py
# changed since the last install. Usage: source scripts/_venv.sh [extra]   (extra: e.g. dev)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRA="${1:-}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "error: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
hash="$(cat "$ROOT/setup.py" "$ROOT/common/VERSION" | sha256sum | cut -c1-16)"
stamp="$VENV/.installed-$hash${EXTRA:+-$EXTRA}"
# An install with extras also satisfies a plain one.
if [ ! -f "$stamp" ] && { [ -n "$EXTRA" ] || ! ls "$VENV"/.installed-"$hash"-* >/dev/null 2>&1; }; then
    echo "installing openclaw-cluster${EXTRA:+[$EXTRA]} into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT$([ -n "$EXTRA" ] && echo "[$EXTRA]")" >&2
    touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
