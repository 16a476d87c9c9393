#!/usr/bin/env bash
# Run the whole test suite: creates .venv, installs claw with [dev], lints, type-checks, tests.
# Extra arguments go to pytest (e.g. -k submit, or --chaos-full for the long chaos run).
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
cd "$ROOT"
# The tool sandbox runs tool processes in bubblewrap where it is installed; the tests of its
# namespaces skip (saying why) without it. CI runs this as root on a fresh machine: install it there.
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing bubblewrap (the tool sandbox)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q bubblewrap >&2 || { apt-get update -q >&2 && apt-get install -y -q bubblewrap >&2; }
fi
# The dashboard's browser tests drive Debian's chromium (Playwright cannot download its own browsers
# here); they skip, saying why, without it. Installed like bubblewrap.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing chromium (the dashboard's browser tests)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >&2 || { apt-get update -q >&2 && apt-get install -y -q chromium >&2; }
fi
echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== mypy" >&2
mypy
echo "== pytest" >&2
# Two test processes by default (the suite is written for it: every test isolates its cluster by
# prefix, ports and temp dirs): on 2 cores this halves the run. CLAW_TEST_PROCESSES=0 runs serially.
exec python -m pytest -n "${CLAW_TEST_PROCESSES:-2}" "$@"
