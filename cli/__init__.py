"""The `claw` command line."""
