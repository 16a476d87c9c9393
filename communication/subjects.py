"""Every subject, stream, consumer, bucket and header name, derived from one prefix.

With the default prefix `claw` this is exactly DESIGN.md's wire contract (`claw.tasks.<priority>.<skill>`
in stream `CLAW_TASKS`, ...). Another prefix gives a separate cluster on the same NATS, which is also
how tests isolate themselves from each other.

Skill names are dotted words (`llm.chat`); in a subject a skill is one token, so its dots become
dashes (`llm-chat`). Skill names may not contain dashes, which keeps the mapping one-to-one, and
WorkQueue consumers, which may not overlap, each filter on exactly one skill token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from common.errors import InvalidInputError
from common.states import Priority

SKILL_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
SKILL_NAME_MAX = 64
# The last token of a worker's poison report subject (`<prefix>.events.<node>.poison`).
POISON_TOKEN = "poison"  # noqa: S105 - a subject token, not a secret


class Header:
    """NATS header names the cluster reads or writes."""

    MSG_ID = "Nats-Msg-Id"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    # The person a gateway's API request acts for, and the credential they presented to the gateway
    # (their API key or signed token), which the coordinator checks itself (coordinator/acting_proof.py).
    ACTING_FOR = "Claw-Acting-For"
    ACTING_CREDENTIAL = "Claw-Acting-Credential"


def check_skill_name(name: str) -> str:
    """Return `name` if it is a valid skill name, else raise with the rule it breaks."""
    if len(name) > SKILL_NAME_MAX or not SKILL_NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"'{name}' is not a valid skill name: use lowercase words of letters, digits and '_', "
            f"joined by dots (e.g. llm.chat), at most {SKILL_NAME_MAX} characters"
        )
    return name


def skill_token(skill: str) -> str:
    """The one subject token (and consumer-name part) that stands for `skill`."""
    return skill.replace(".", "-")


def skill_from_token(token: str) -> str:
    """Inverse of `skill_token`."""
    return token.replace("-", ".")


@dataclass(frozen=True)
class Subjects:
    """Names for one cluster prefix."""

    prefix: str = "claw"
    upper: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "upper", self.prefix.upper())

    # --- streams, consumers, buckets -------------------------------------------------------------

    @property
    def tasks_stream(self) -> str:
        """Work-queue stream holding queued tasks."""
        return f"{self.upper}_TASKS"

    @property
    def events_stream(self) -> str:
        """Limits stream holding task events."""
        return f"{self.upper}_EVENTS"

    @property
    def dlq_stream(self) -> str:
        """Dead-letter stream."""
        return f"{self.upper}_DLQ"

    @property
    def nodes_bucket(self) -> str:
        """KV bucket with each node's last heartbeat."""
        return f"{self.prefix}_nodes"

    @property
    def node_control_bucket(self) -> str:
        """KV bucket with the coordinator's desired state of each node (`NodeCommand`, key: node id)."""
        return f"{self.prefix}_node_control"

    @property
    def skills_bucket(self) -> str:
        """KV bucket with the skill registry snapshot workers load from (key `registry`)."""
        return f"{self.prefix}_skills"

    @property
    def skill_code_bucket(self) -> str:
        """Object store holding installed skills' files (one tar.gz per name@version)."""
        return f"{self.prefix}_skill_code"

    @property
    def audit_bucket(self) -> str:
        """KV bucket where the coordinator anchors the event log's hash-chain head."""
        return f"{self.prefix}_audit"

    @property
    def coordinator_bucket(self) -> str:
        """KV bucket holding the coordinator's lease on this prefix (key `leader`)."""
        return f"{self.prefix}_coordinator"

    @property
    def events_consumer(self) -> str:
        """The coordinator's durable consumer on the events stream."""
        return "coordinator-events"

    def task_consumer(self, skill: str, priority: Priority) -> str:
        """The durable consumer shared by every worker that runs `skill`, for one priority."""
        return f"tasks-{skill_token(skill)}-{priority.value}"

    # --- JetStream subjects ----------------------------------------------------------------------

    def task(self, priority: Priority, skill: str) -> str:
        """Where a task of `skill` at `priority` is published."""
        return f"{self.prefix}.tasks.{priority.value}.{skill_token(skill)}"

    @property
    def tasks_all(self) -> str:
        """Every task subject."""
        return f"{self.prefix}.tasks.>"

    def events(self, node_id: str, task_id: str) -> str:
        """Where `node_id` publishes the events of one task: the node id is in the subject so the
        server's permissions can bind it to the worker's credentials (docs/Security.md)."""
        return f"{self.prefix}.events.{node_id}.{task_id}"

    def events_of(self, task_id: str) -> str:
        """Every node's events of one task (what a watcher subscribes to)."""
        return f"{self.prefix}.events.*.{task_id}"

    def events_of_node(self, node_id: str) -> str:
        """Every event one node may publish (its permissions)."""
        return f"{self.prefix}.events.{node_id}.*"

    def poison_report(self, node_id: str) -> str:
        """Where `node_id` reports a task message it could not decode: an event subject (its own node
        id in it, bound by the server to its credentials; `poison` is never a task id, which is a
        ULID), so the coordinator reads who reports and records the dead letter itself."""
        return f"{self.prefix}.events.{node_id}.{POISON_TOKEN}"

    @property
    def events_all(self) -> str:
        """Every event subject."""
        return f"{self.prefix}.events.>"

    def dlq(self, skill: str) -> str:
        """Dead letters of one skill."""
        return f"{self.prefix}.dlq.{skill_token(skill)}"

    def dlq_task(self, skill: str, task_id: str) -> str:
        """The dead letter of one task: one subject per task, so its newest letter replaces older ones."""
        return f"{self.prefix}.dlq.{skill_token(skill)}.{task_id}"

    def dlq_tasks_of(self, skill: str) -> str:
        """Every per-task dead-letter subject of one skill (poison letters stay on `dlq(skill)`)."""
        return f"{self.prefix}.dlq.{skill_token(skill)}.*"

    @property
    def dlq_all(self) -> str:
        """Every dead-letter subject."""
        return f"{self.prefix}.dlq.>"

    # --- core NATS subjects ----------------------------------------------------------------------

    def heartbeat(self, node_id: str) -> str:
        """A node's heartbeats."""
        return f"{self.prefix}.nodes.heartbeat.{node_id}"

    @property
    def heartbeat_all(self) -> str:
        """Every node's heartbeats."""
        return f"{self.prefix}.nodes.heartbeat.*"

    def claims(self, node_id: str) -> str:
        """The deliveries a node has started (`DeliveryClaims`), for reclaim should it die."""
        return f"{self.prefix}.nodes.claims.{node_id}"

    @property
    def claims_all(self) -> str:
        """Every node's delivery claims."""
        return f"{self.prefix}.nodes.claims.*"

    def api(self, identity: str, verb: str) -> str:
        """The request subject of one API verb sent by `identity`: the server's permissions bind the
        identity token to the sender's credentials, so the coordinator reads who asks from here."""
        return f"{self.prefix}.api.{identity}.{verb}"

    def api_verb(self, verb: str) -> str:
        """Requests of one verb from any identity (what coordinators subscribe to)."""
        return f"{self.prefix}.api.*.{verb}"

    def api_of(self, identity: str) -> str:
        """Every request one identity may send (its permissions)."""
        return f"{self.prefix}.api.{identity}.>"

    @staticmethod
    def inbox_prefix(identity: str) -> str:
        """The reply-inbox prefix of one identity: permissions let only it subscribe there, so no
        one else can read the replies it is sent."""
        return f"_INBOX_{identity}"

    @property
    def api_queue_group(self) -> str:
        """Coordinators answer the API as one queue group."""
        return f"{self.prefix}-coordinators"

    def ctl(self, node_id: str) -> str:
        """Control messages for one node (drain, pause, resume, shutdown)."""
        return f"{self.prefix}.ctl.{node_id}"

    def cancel(self, task_id: str) -> str:
        """Broadcast: cancel this task wherever it runs."""
        return f"{self.prefix}.cancel.{task_id}"

    @property
    def cancel_all(self) -> str:
        """Every cancellation."""
        return f"{self.prefix}.cancel.*"

    def wake(self, skill: str) -> str:
        """Hint to idle workers that `skill` has new tasks (payload: the priority)."""
        return f"{self.prefix}.wake.{skill_token(skill)}"

    def updates(self, task_id: str) -> str:
        """Committed state changes of one task, broadcast by the coordinator."""
        return f"{self.prefix}.updates.{task_id}"

    @property
    def updates_all(self) -> str:
        """Committed state changes of every task."""
        return f"{self.prefix}.updates.*"

    # --- schedules' event triggers (coordinator/schedules/, docs/Scheduling.md) -------------------

    @property
    def triggers_stream(self) -> str:
        """Limits stream keeping trigger messages until the coordinator has fired their schedules."""
        return f"{self.upper}_TRIGGERS"

    @property
    def triggers_consumer(self) -> str:
        """The coordinator's durable consumer on the triggers stream."""
        return "coordinator-triggers"

    @property
    def trigger_root(self) -> str:
        """`<prefix>.trigger.`: a schedule created `--on-subject material.new` fires on a message that
        identity `alice` publishes on `<prefix>.trigger.alice.material.new`."""
        return f"{self.prefix}.trigger."

    def trigger(self, identity: str, subject: str) -> str:
        """Where `identity` publishes an event for schedules listening on `subject` (relative): the
        identity token is bound to the publisher's credentials by the server's permissions, so the
        coordinator knows who fires (docs/Scheduling.md)."""
        return f"{self.trigger_root}{identity}.{subject}"

    def triggers_of(self, identity: str) -> str:
        """Every trigger subject one identity may publish on (its permissions)."""
        return f"{self.trigger_root}{identity}.>"

    @property
    def triggers_all(self) -> str:
        """Every trigger subject."""
        return f"{self.prefix}.trigger.>"

    # --- the HTTP gateway (issue 14) --------------------------------------------------------------

    @property
    def gateway_keys_bucket(self) -> str:
        """KV bucket of the HTTP credentials: API keys (hashed; key: the key id), signed tokens' records
        (`tok.<id>`) and the tokens' public key. Admins and the coordinator write it; gateways read it."""
        return f"{self.prefix}_gateway_keys"

    @property
    def gateway_sessions_bucket(self) -> str:
        """KV bucket of the dashboard's session secret: only gateways and the coordinator touch it."""
        return f"{self.prefix}_gateway_sessions"

    def feed(self, task_id: str) -> str:
        """A task's event log grew (any row, progress included), broadcast by the coordinator after
        the commit: what the gateway's live views wait on before reading the new rows."""
        return f"{self.prefix}.feed.{task_id}"

    @property
    def feed_all(self) -> str:
        """The feed of every task."""
        return f"{self.prefix}.feed.*"
