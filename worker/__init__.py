"""The worker process: consumers, execution slots, skill runtime, heartbeats.

A worker embedded in a program of your own, with skills of its own (docs/Skills.md):

    from worker import TaskContext, Worker, builtin_registry, skill

Exported names are imported on first use (`common/exports.py`): importing `worker.skills` does not
load the worker's NATS and storage machinery.
"""

from typing import TYPE_CHECKING

from common.exports import lazy

EXPORTS = {
    "worker.context": ["TaskContext"],
    "worker.service": ["Worker"],
    "worker.skills": ["Skill", "SkillRegistry", "builtin_registry", "skill"],
    "worker.skills.tools.llm": ["LlmTool"],
}
__all__ = [name for names in EXPORTS.values() for name in names]

if TYPE_CHECKING:
    from worker.context import TaskContext as TaskContext
    from worker.service import Worker as Worker
    from worker.skills import Skill as Skill
    from worker.skills import SkillRegistry as SkillRegistry
    from worker.skills import builtin_registry as builtin_registry
    from worker.skills import skill as skill
    from worker.skills.tools.llm import LlmTool as LlmTool
else:
    __getattr__ = lazy(__name__, EXPORTS)
