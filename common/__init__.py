"""Shared foundations: config, logging, wire models, errors, ids and clocks.

The names a program using the cluster needs, whether it submits tasks, watches their events or
runs skills:

    from common import ClawError, Priority, RetryableError, TaskProgress, TaskSpec, TaskState, load_config

The API's wire contract is in `common.api` (request and reply Structs) and `common.verbs` (each verb
once: name, request, reply, role). Exported names are imported on first use (`common/exports.py`).
"""

from pathlib import Path
from typing import TYPE_CHECKING

from common.exports import lazy

__version__ = (Path(__file__).parent / "VERSION").read_text().strip()

EXPORTS = {
    "common.config": ["ClawConfig", "LogSettings", "NatsSettings", "load_config"],
    "common.errors": [
        "ClawError",
        "CommunicationError",
        "ConfigError",
        "CoordinatorUnavailableError",
        "InvalidInputError",
        "NatsUnavailableError",
        "PayloadTooLargeError",
        "PermanentError",
        "QueueFullError",
        "RequestError",
        "RequestTimeoutError",
        "RetryableError",
        "TaskNotFoundError",
        "UnknownSkillError",
    ],
    "common.events": [
        "TaskArtifact",
        "TaskCancelled",
        "TaskEvent",
        "TaskFailed",
        "TaskLog",
        "TaskProgress",
        "TaskStarted",
        "TaskSucceeded",
        "TaskVerifying",
    ],
    "common.log": ["configure_logging"],
    "common.models": ["TaskSpec", "TaskSummary", "TaskView"],
    "common.skills": ["Risk"],
    "common.states": ["Priority", "TaskState"],
}
__all__ = ["__version__", *(name for names in EXPORTS.values() for name in names)]

if TYPE_CHECKING:
    from common.config import ClawConfig as ClawConfig
    from common.config import LogSettings as LogSettings
    from common.config import NatsSettings as NatsSettings
    from common.config import load_config as load_config
    from common.errors import ClawError as ClawError
    from common.errors import CommunicationError as CommunicationError
    from common.errors import ConfigError as ConfigError
    from common.errors import CoordinatorUnavailableError as CoordinatorUnavailableError
    from common.errors import InvalidInputError as InvalidInputError
    from common.errors import NatsUnavailableError as NatsUnavailableError
    from common.errors import PayloadTooLargeError as PayloadTooLargeError
    from common.errors import PermanentError as PermanentError
    from common.errors import QueueFullError as QueueFullError
    from common.errors import RequestError as RequestError
    from common.errors import RequestTimeoutError as RequestTimeoutError
    from common.errors import RetryableError as RetryableError
    from common.errors import TaskNotFoundError as TaskNotFoundError
    from common.errors import UnknownSkillError as UnknownSkillError
    from common.events import TaskArtifact as TaskArtifact
    from common.events import TaskCancelled as TaskCancelled
    from common.events import TaskEvent as TaskEvent
    from common.events import TaskFailed as TaskFailed
    from common.events import TaskLog as TaskLog
    from common.events import TaskProgress as TaskProgress
    from common.events import TaskStarted as TaskStarted
    from common.events import TaskSucceeded as TaskSucceeded
    from common.events import TaskVerifying as TaskVerifying
    from common.log import configure_logging as configure_logging
    from common.models import TaskSpec as TaskSpec
    from common.models import TaskSummary as TaskSummary
    from common.models import TaskView as TaskView
    from common.skills import Risk as Risk
    from common.states import Priority as Priority
    from common.states import TaskState as TaskState
else:
    __getattr__ = lazy(__name__, EXPORTS)
