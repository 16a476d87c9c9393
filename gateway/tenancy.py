"""A tenant's API key or token sees and touches only its tenant's tasks: the rules live in
coordinator/tenants/scope.py, where the coordinator applies them too (to a gateway acting for a
tenant's person); the gateway applies them first (gateway/calls.py)."""

from coordinator.tenants.scope import ONE_TASK_VERBS, OPEN_VERBS, TenantScope, VerbCaller, not_found

__all__ = ["ONE_TASK_VERBS", "OPEN_VERBS", "TenantScope", "VerbCaller", "not_found"]
