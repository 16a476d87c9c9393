#!/usr/bin/env bash
# Run the whole test suite: creates .venv, installs claw with [dev], lints, type-checks, tests.
# Extra arguments go to pytest (e.g. -k submit, or --chaos-full for the long chaos run).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
cd "$ROOT"
echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== mypy" >&2
mypy
echo "== pytest" >&2
exec python -m pytest "$@"
