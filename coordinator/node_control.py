"""Node control: the desired state of each worker node (active, paused, drained), owned here.

`claw node pause|drain|resume ID` records the state in SQLite (the record, and an event in the
audit log), copies it to KV `<prefix>_node_control` (where a starting worker reads it), and sends it
to the node on `<prefix>.ctl.<node_id>` as a request: the node applies it at once and answers with
what it does, which the reply passes on. A node that does not answer (offline, cut off) follows the
state when it next starts or beats: each heartbeat says which control the node follows, and one that
differs from the desired state gets the command again (at most once per heartbeat interval).

So the state survives a coordinator restart (SQLite) and a worker restart (KV): a paused node comes
back paused, like a cordoned Kubernetes node, until someone resumes it.
"""

from __future__ import annotations

import msgspec
from nats.js.kv import KeyValue

from common.api import NodeControlReply
from common.clock import Clock
from common.errors import NodeNotFoundError
from common.event_kinds import EventKind
from common.log import get_logger
from common.models import NodeCommand, NodeHeartbeat, NodeReport, NodeView
from common.states import NodeControl, NodeStatus
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS, NatsConnection
from coordinator.node_registry import NodeRegistry
from storage.node_store import NodeStore
from storage.records import EventRecord, WriteBatch
from storage.task_writer import TaskWriter

log = get_logger("coordinator.node_control")

# How long a control request waits for the node's answer: it applies the state at once.
ANSWER_TIMEOUT_S = 1.0
ACTIVE = NodeCommand(control=NodeControl.ACTIVE)


class NodeControlDesk:
    """Desired node states: set by the API, persisted, pushed to nodes, reconciled on heartbeats."""

    def __init__(
        self,
        conn: NatsConnection,
        store: NodeStore,
        tasks: TaskWriter,
        registry: NodeRegistry,
        kv: KeyValue,
        clock: Clock,
    ) -> None:
        self._conn = conn
        self._store = store
        self._tasks = tasks
        self._registry = registry
        self._kv = kv
        self._clock = clock
        self._desired: dict[str, NodeCommand] = {}
        # When each node was last sent its command because its beat disagreed (coordinator clock).
        self._resent_at: dict[str, float] = {}

    async def load(self) -> None:
        """Read the desired states and make sure KV holds the same (a write there may have failed)."""
        self._desired = await self._store.load_controls()
        for node_id, command in self._desired.items():
            await self._mirror(node_id, command)

    def desired(self, node_id: str) -> NodeControl:
        """What `node_id` should do (active unless someone paused or drained it)."""
        return self._desired.get(node_id, ACTIVE).control

    async def set(self, node_id: str, control: NodeControl, *, by: str | None) -> NodeControlReply:
        """Record and send a node's desired state; the reply says what the node does now."""
        view = self._registry.get(node_id)
        if view is None:
            raise NodeNotFoundError(f"no node called '{node_id}' has registered; `claw nodes` shows them")
        changed = self.desired(node_id) != control
        if changed:
            command = NodeCommand(control=control, changed_at=self._clock.now(), by=by)
            await self._store.save_control(node_id, command)
            event = EventRecord.of(
                EventKind.node_control(control), f"node:{node_id}", command.changed_at, node_id=node_id, data={"by": by}
            )
            await self._tasks.write_batch(WriteBatch(events=[event]))
            self._desired[node_id] = command
            log.info("node.control", node_id=node_id, control=control.value, by=by)
            await self._mirror(node_id, command)
        report = await self._send(node_id, self._desired.get(node_id, ACTIVE))
        if report is not None:
            self._registry.note_report(report)
            status, running = report.status, report.running
        else:
            status, running = view.status, view.running
        return NodeControlReply(
            node_id=node_id,
            control=control,
            status=status,
            running=running,
            confirmed=report is not None,
            changed=changed,
        )

    async def on_beat(self, beat: NodeHeartbeat) -> None:
        """Send a node its command again when its beat shows it follows another one."""
        if beat.status in (NodeStatus.OFFLINE, NodeStatus.STOPPING):
            return
        command = self._desired.get(beat.node_id, ACTIVE)
        if beat.control == command.control:
            self._resent_at.pop(beat.node_id, None)
            return
        now = self._clock.now()
        if now - self._resent_at.get(beat.node_id, 0.0) < beat.interval_s:
            return
        self._resent_at[beat.node_id] = now
        log.info("node.control_resent", node_id=beat.node_id, control=command.control.value, follows=beat.control)
        try:
            await self._conn.nc.publish(self._conn.subjects.ctl(beat.node_id), encode(command))
        except NATS_ERRORS as exc:
            log.warning("node.control_send_failed", node_id=beat.node_id, error=str(exc) or type(exc).__name__)

    async def _send(self, node_id: str, command: NodeCommand) -> NodeReport | None:
        """Ask the node to follow `command`; its report, or None when it did not answer in time."""
        try:
            subject = self._conn.subjects.ctl(node_id)
            msg = await self._conn.nc.request(subject, encode(command), timeout=ANSWER_TIMEOUT_S)
        except NATS_ERRORS as exc:
            log.info("node.control_unanswered", node_id=node_id, error=str(exc) or type(exc).__name__)
            return None
        try:
            return decode(msg.data, NodeReport)
        except DecodeError as exc:
            log.warning("node.bad_control_answer", node_id=node_id, error=str(exc))
            return None

    async def _mirror(self, node_id: str, command: NodeCommand) -> None:
        """Copy the state where a starting worker reads it; the heartbeat check covers a failure."""
        try:
            await self._kv.put(node_id, encode(command))
        except NATS_ERRORS as exc:
            log.error("node.control_mirror_failed", node_id=node_id, error=str(exc) or type(exc).__name__)

    def views_with_control(self) -> list[NodeView]:
        """The registry's node views with each node's desired state."""
        return [msgspec.structs.replace(v, control=self.desired(v.node_id)) for v in self._registry.views()]
