#!/usr/bin/env bash
# Run a local cluster: creates .venv, installs claw, then `claw up` (nats-server, a coordinator,
# 2 workers) with everything under ./.claw. Extra arguments go to `claw up` (e.g. --workers 4).
set -euo pipefail
# An explicit (empty) argument: without one, `source` hands this script's arguments (meant for
# `claw up`) to _venv.sh, which would take the first as the extras to install.
source "$(dirname "$0")/_venv.sh" ""
cd "$ROOT"
exec claw up --workers 2 "$@"
