"""The command groups of `claw`, one module each.

Every module exposes `register(app)`, which adds its commands (or its sub-app) to the root app;
`cli.main` calls them in the order `claw --help` lists them. A new group is one new module here and
one line in `cli.main.GROUPS`. A module keeps its own renderers (how its answers print as tables).
"""
