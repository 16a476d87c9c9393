"""Shared foundations: config, logging, wire models, errors, ids and clocks."""

from pathlib import Path

__version__ = (Path(__file__).parent / "VERSION").read_text().strip()
