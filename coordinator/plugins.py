"""How a feature family plugs into the coordinator: a `register(coordinator)` that adds its hooks.

The coordinator has two named extension points, and a feature uses them instead of its constructor:

- after-commit listeners (`coordinator.listeners`, coordinator/commit_listeners.py): called with
  what each transaction committed - its event-log rows and its tasks as committed;
- periodic jobs (`coordinator.jobs`, coordinator/periodic_jobs.py): a table of (name, interval,
  function), run by one scheduler, shown in `claw status`.

A feature sub-package (workflows, flow control) exposes `register(coordinator)`, which builds its
objects from the coordinator's parts (`coordinator.writer`, `.queries`, `.book`, `.pipeline`,
`.conn`, `.config`, ...) and registers its listeners and jobs; it is named in `FEATURES`
(coordinator/service.py) or passed to `Coordinator.start(config, plugins=[...])`. A module with such
a function is a `CoordinatorPlugin`. docs/Architecture.md ("Hooks") shows an example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from coordinator.service import Coordinator


class CoordinatorPlugin(Protocol):
    """A feature family of the coordinator (a module or an object with `register`)."""

    def register(self, coordinator: Coordinator) -> None:
        """Add the feature's after-commit listeners and periodic jobs (called once, before `run`)."""
        ...
