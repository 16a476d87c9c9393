"""`python -m cli.bench [OPTIONS]`: the benchmark (the same as `claw bench`)."""

import sys

from cli.bench.main import main

sys.exit(main(prog="python -m cli.bench"))
