"""Lazy exports for the packages' `__init__`: a name is imported from its home module on first use.

A package's `__init__` runs whenever any of its modules is imported, so exporting `Worker` eagerly
from `worker/__init__.py` would load NATS, the database and the artifact stores into everything that
touches `worker.skills`, `claw --help` included. With `__getattr__ = lazy(__name__, {name: home})`
the package costs nothing until a name is used (PEP 562). mypy sees the same names through the
package's `if TYPE_CHECKING:` imports (`import X as X`: re-exported); tests/unit/test_public_api.py
keeps the two lists equal.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence


def lazy(package: str, exports: Mapping[str, Sequence[str]]) -> Callable[[str], object]:
    """A module `__getattr__` for `package` that imports each name of `exports` (module -> names)
    from its module."""
    homes = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # found directly from now on
        return value

    return __getattr__
