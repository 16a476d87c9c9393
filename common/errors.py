"""The one exception hierarchy of the project.

Every error a user can cause or meet derives from `ClawError`; its message is the single line the CLI
prints. Errors that cross the wire (API replies) carry a stable `code` so a client can raise the same
class the coordinator raised (`error_for_code`).
"""

from __future__ import annotations


class ClawError(Exception):
    """Base of every project error. `str(err)` is a complete, user-facing sentence."""

    code = "error"


# --- configuration -------------------------------------------------------------------------------


class ConfigError(ClawError):
    """A config file, environment variable or flag is invalid; the message names the key."""

    code = "config"


# --- communication -------------------------------------------------------------------------------


class CommunicationError(ClawError):
    """Talking to NATS or to the coordinator failed."""

    code = "communication"


class NatsUnavailableError(CommunicationError):
    """NATS cannot be reached at the configured URL."""

    code = "nats_unavailable"


class CoordinatorUnavailableError(CommunicationError):
    """No coordinator answered an API request."""

    code = "coordinator_unavailable"


class RequestTimeoutError(CommunicationError, TimeoutError):
    """A request got no answer in time."""

    code = "timeout"


class NatsServerError(ClawError):
    """The embedded nats-server could not be started or did not become healthy."""

    code = "nats_server"


class PortInUseError(NatsServerError):
    """A port the embedded nats-server was to listen on is taken; `role` is `client` or `monitoring`."""

    code = "port_in_use"

    def __init__(self, message: str, *, port: int, role: str) -> None:
        super().__init__(message)
        self.port = port
        self.role = role


# --- nodes ---------------------------------------------------------------------------------------


class NodeIdInUseError(ClawError):
    """A worker was started with the node id of a live worker process."""

    code = "node_id_in_use"


class NodeIdTakenOverError(ClawError):
    """Another worker process took this one's node id (it was frozen or cut off for too long)."""

    code = "node_id_taken_over"


# --- storage -------------------------------------------------------------------------------------


class StorageError(ClawError):
    """The state database failed or is in a state this version cannot use."""

    code = "storage"


class DatabaseDamagedError(StorageError):
    """The state database fails SQLite's integrity check: serving from it would spread the damage."""

    code = "database_damaged"


class MigrationError(StorageError):
    """The database schema is newer than this code, or a migration failed."""

    code = "migration"


class ArtifactError(StorageError):
    """The artifact store (local folder or S3 API) failed, or is misused; the message says where."""

    code = "artifact"


class ArtifactNotFoundError(ArtifactError):
    """No artifact is stored under the given key."""

    code = "artifact_not_found"


# --- requests a user made ------------------------------------------------------------------------


class RequestError(ClawError):
    """A request was refused because of what it asked for; nothing was written."""

    code = "bad_request"


class InvalidInputError(RequestError):
    """A task's input or options are not valid."""

    code = "invalid_input"


class UnknownSkillError(RequestError):
    """No worker offers the requested skill."""

    code = "unknown_skill"


class TaskNotFoundError(RequestError):
    """No task has the given id."""

    code = "not_found"


class NodeNotFoundError(RequestError):
    """The request names a node the coordinator has never heard from."""

    code = "node_not_found"


class PayloadTooLargeError(RequestError):
    """An input or result exceeds the inline size limit."""

    code = "payload_too_large"


class ScheduleNotFoundError(RequestError):
    """The request names a schedule that does not exist (`claw schedules list` shows them)."""

    code = "schedule_not_found"


class QueueFullError(RequestError):
    """The skill's queue holds its maximum number of tasks."""

    code = "queue_full"


class PermissionDeniedError(RequestError):
    """The caller's credentials do not hold the role a verb needs (the message names it)."""

    code = "forbidden"


class QuotaExceededError(QueueFullError):
    """A tenant's quota (`tenants.quotas.<tenant>.max_queued`) would be exceeded; nothing was stored."""

    code = "quota_exceeded"


class WorkflowSpecError(InvalidInputError):
    """A workflow spec is not valid; the message names the node and what is wrong."""

    code = "invalid_workflow"


class WorkflowNotFoundError(RequestError):
    """No workflow (or run) has the given name (or id)."""

    code = "workflow_not_found"


class InternalError(ClawError):
    """The coordinator failed while handling a request; its log has the details."""

    code = "internal"


class CredentialsError(ConfigError):
    """A credentials file that cannot be used (missing, unreadable, not ours, revoked identity)."""

    code = "credentials"


# --- the coordinator's lease ---------------------------------------------------------------------


class LeaseHeldError(ClawError):
    """Another coordinator is alive on this prefix: this one must not start (the message names it)."""

    code = "lease_held"


class LeaseLostError(ClawError):
    """This coordinator's lease lapsed or was taken over: it must stop writing at once."""

    code = "lease_lost"


# --- state machine -------------------------------------------------------------------------------


class IllegalTransitionError(ClawError):
    """A task state change that the transition table does not allow."""

    code = "illegal_transition"


class BadEventError(ClawError):
    """A task event that cannot be applied (no such task, a transition the table forbids): the
    coordinator quarantines it and goes on."""

    code = "bad_event"


class ForgedEventError(BadEventError):
    """A task event its sender may not make: published under another node's subject, or about an
    attempt another node holds. Quarantined and logged as a security event."""

    code = "forged_event"


# --- task execution (raised by skill handlers) ---------------------------------------------------


class TaskError(ClawError):
    """Raised by a skill handler to end an attempt as failed, with an explicit retry intent."""

    code = "task_error"
    retryable = False

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RetryableError(TaskError):
    """The attempt failed for a passing reason (rate limit, connection, timeout): try again."""

    code = "retryable"
    retryable = True


class PermanentError(TaskError):
    """The attempt failed in a way another attempt cannot fix: do not retry."""

    code = "permanent"
    retryable = False


class InvalidOutputError(RetryableError):
    """The handler's result does not match the skill's output schema.

    Retryable: the usual cause is a model's JSON that missed the schema, which another attempt may
    get right; a handler that is simply wrong fails its attempts and goes to the dead letters.
    """

    code = "invalid_output"


class TaskTimeoutError(RetryableError, TimeoutError):
    """The handler ran past the task's timeout and was cancelled."""

    code = "task_timeout"


class ToolTimeoutError(RetryableError, TimeoutError):
    """A tool skill's own time limit ran out (a process it ran was killed, a request abandoned)."""

    code = "tool_timeout"


_WIRE_ERRORS: dict[str, type[ClawError]] = {
    cls.code: cls
    for cls in (
        ConfigError,
        RequestError,
        InvalidInputError,
        UnknownSkillError,
        TaskNotFoundError,
        NodeNotFoundError,
        ScheduleNotFoundError,
        PayloadTooLargeError,
        QueueFullError,
        PermissionDeniedError,
        QuotaExceededError,
        InternalError,
        StorageError,
        ArtifactError,
        ArtifactNotFoundError,
        IllegalTransitionError,
        WorkflowSpecError,
        WorkflowNotFoundError,
        # "Not stored, retry when NATS is healthy" (a coordinator that cannot renew its lease): a
        # client retrying with its own ids (submit_many(retry_for_s=...)) rides it out.
        CoordinatorUnavailableError,
    )
}


def error_for_code(code: str, message: str) -> ClawError:
    """Rebuild on the client the error the coordinator reported with `code`."""
    return _WIRE_ERRORS.get(code, ClawError)(message)


# --- trust-audit (issue 11, items 4 and 5) ------------------------------------------------------------


class SkillArchiveTamperedError(ClawError):
    """An installed skill's archive in the skill-code store is not the one whose sha256 was registered."""

    code = "skill_tampered"


class AuditKeyError(ClawError):
    """The audit anchor key (`<db dir>/auth/audit.nk`) or a public key given for it is unusable."""

    code = "audit_key"


# --- the HTTP gateway (issue 14) -----------------------------------------------------------------


class NotAuthenticatedError(RequestError):
    """A request to the HTTP gateway carried no credential, or one that is unknown or revoked."""

    code = "unauthenticated"
