#!/usr/bin/env bash
# Run a local cluster: creates .venv, installs claw, then `claw up` (nats-server, a coordinator,
# 2 workers) with everything under ./.claw. Extra arguments go to `claw up` (e.g. --workers 4).
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
exec claw up --workers 2 "$@"
