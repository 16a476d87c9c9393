"""`python -m cli` runs `claw` (how `claw up` and the tests start child processes)."""

from cli.main import run

run()
