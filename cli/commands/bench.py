"""`claw bench`: the benchmark (the package `cli.bench`), with its own options."""

from __future__ import annotations

import typer

HELP_FLAGS = ("--help", "-h")


def bench(ctx: typer.Context) -> None:
    """Benchmark an embedded cluster against the raw JetStream round trip (`claw bench --help`)."""
    if any(arg in HELP_FLAGS for arg in ctx.args):
        from cli.bench.options import build_parser
        from cli.help import print_argparse_help

        print_argparse_help(build_parser())
        raise typer.Exit()
    from cli.bench import main as bench_main

    raise typer.Exit(bench_main(ctx.args))


def register(app: typer.Typer) -> None:
    """Add `claw bench`."""
    app.command(
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    )(bench)
