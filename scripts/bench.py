#!/usr/bin/env python3
"""Run the benchmark: `python scripts/bench.py [--quick] [--json FILE] ...` (same options as `claw bench`).

After `scripts/test.sh` or `scripts/up.sh` has created the virtualenv: `.venv/bin/python scripts/bench.py`.
docs/Performance.md explains the figures.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cli.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/bench.py"))
