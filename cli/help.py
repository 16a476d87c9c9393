"""How `claw ... --help` reads: one style for every command, the benchmark's included.

typer renders each option's type in angle brackets (`<int>`, `<path>`); it does so for flags too
(`--wait <bool>`), which reads as if the flag took a value, and it folds a long list of choices
mid-word to fit its type column. `polish` walks the built command tree once, before it runs: flags
get no type, and an option with many choices shows a short placeholder with the choices listed in
its help text (which wraps between words). `print_argparse_help` draws the benchmark's argparse
options in the same panels as the typer commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import typer
from rich.console import Console
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

# A choice list longer than this goes into the help text instead of the type column.
MAX_CHOICES_WIDTH = 24


def polish(command: Any) -> None:
    """Fix the help of every option of `command` and its subcommands (see the module docstring)."""
    for cmd in _walk(command):
        help_option = cmd.get_help_option(typer.Context(cmd))
        for param in [*cmd.params, *([help_option] if help_option is not None else [])]:
            if getattr(param, "param_type_name", "") != "option" or param.metavar is not None:
                continue
            if getattr(param, "is_flag", False):
                param.metavar = ""  # a flag takes no value: no type to show
                continue
            choices = _choices(param)
            if choices and len("|".join(choices)) > MAX_CHOICES_WIDTH:
                param.metavar = f"<{param.name}>"
                param.help = f"{(param.help or '').rstrip()} One of: {', '.join(choices)}.".lstrip()


def _walk(command: Any) -> Iterator[Any]:
    yield command
    for sub in getattr(command, "commands", {}).values():
        yield from _walk(sub)


def _choices(param: Any) -> list[str]:
    descriptor = getattr(param, "type_descriptor", None)
    values = getattr(descriptor, "choices", None) or getattr(getattr(param, "type", None), "choices", None) or ()
    return [str(getattr(value, "value", value)) for value in values]


def print_argparse_help(parser: argparse.ArgumentParser, console: Console | None = None) -> None:
    """Print an argparse parser's help in the panels typer draws for the other commands."""
    console = console or Console()
    console.print(Padding(Text(f"Usage: {parser.prog} [OPTIONS]", style="bold"), 1))
    if parser.description:
        console.print(Padding(Text(parser.description), (0, 1, 1, 1)))
    table = Table(show_header=False, box=None, expand=True, pad_edge=False, padding=(0, 1))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(style="bold yellow", no_wrap=True)
    table.add_column(ratio=1)
    # argparse has no public accessor for its options; its own help comes last, as in typer's.
    actions = sorted(parser._actions, key=lambda action: isinstance(action, argparse._HelpAction))
    for action in actions:
        if not action.option_strings:
            continue
        name = action.metavar if isinstance(action.metavar, str) else action.dest
        metavar = f"<{name.lower()}>" if action.nargs != 0 else ""
        names = ", ".join(sorted(action.option_strings, key=len, reverse=True))
        table.add_row(Text(names), Text(metavar), Text(_sentence(action.help or "")))
    console.print(Panel(table, title="Options", title_align="left", border_style="dim"))


def _sentence(text: str) -> str:
    # argparse help is conventionally lower case; typer's starts with a capital.
    if text == "show this help message and exit":
        return "Show this message and exit."
    first = text.split(" ", 1)[0]
    return text[:1].upper() + text[1:] if first.isalpha() else text  # not names like py-spy
