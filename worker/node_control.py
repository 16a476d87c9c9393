"""A worker following the coordinator's control of its node: active, paused or drained.

- Starting, the worker reads its desired state from KV `<prefix>_node_control` before it pulls
  anything, so a node paused or drained before a restart comes back that way.
- On `<prefix>.ctl.<node_id>` it gets a `NodeCommand` (a request from `claw node ...`, or a
  re-send when its heartbeat showed it follows another state), applies it at once - the puller
  checks the flag before every fetch - and answers with a `NodeReport`.

Paused and drained both stop pulling while running tasks finish; they differ in what the node
reports: `paused`, or `draining` then `drained` once nothing runs. A shutdown (`stopping`) wins over
either, and `resume` does not undo it.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from common.log import get_logger
from common.models import NodeCommand, NodeReport
from common.states import NodeControl, NodeStatus
from communication.codec import DecodeError, decode, encode
from communication.connection import NATS_ERRORS, NatsConnection
from worker.puller import TaskPuller

log = get_logger("worker.node_control")


class NodeController:
    """The control this node follows, and the status it derives from it."""

    def __init__(self, conn: NatsConnection, node_id: str, puller: TaskPuller, running: Callable[[], int]) -> None:
        self._conn = conn
        self._node_id = node_id
        self._puller = puller
        self._running = running
        self.control = NodeControl.ACTIVE
        self.stopping = False
        self._sub: Subscription | None = None

    async def start(self, kv: KeyValue) -> None:
        """Follow the stored desired state, then listen for commands."""
        try:
            entry = await kv.get(self._node_id)
        except KeyNotFoundError:
            entry = None
        if entry is not None and entry.value:
            try:
                self.apply(decode(entry.value, NodeCommand).control)
            except DecodeError as exc:
                log.warning("node.bad_control_state", error=str(exc))
        if self._sub is None:  # a start-up retry after the subscription was made
            self._sub = await self._conn.nc.subscribe(self._conn.subjects.ctl(self._node_id), cb=self._on_command)

    async def stop(self) -> None:
        """Stop listening."""
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def status(self) -> NodeStatus:
        """What this node does now, as heartbeats report it."""
        if self.stopping:
            return NodeStatus.STOPPING
        if self.control == NodeControl.PAUSED:
            return NodeStatus.PAUSED
        if self.control == NodeControl.DRAINED:
            return NodeStatus.DRAINING if self._running() else NodeStatus.DRAINED
        return NodeStatus.ONLINE

    def apply(self, control: NodeControl) -> None:
        """Follow `control` from now on (the puller sees it before its next fetch)."""
        if control != self.control:
            log.info("node.control_applied", control=control.value, previous=self.control.value)
        self.control = control
        if control == NodeControl.ACTIVE:
            self._puller.resume()
        else:
            self._puller.pause()

    async def _on_command(self, msg: Msg) -> None:
        try:
            command = decode(msg.data, NodeCommand)
        except DecodeError as exc:
            log.warning("node.bad_control", error=str(exc))
            return
        self.apply(command.control)
        if not msg.reply:
            return
        report = NodeReport(node_id=self._node_id, control=self.control, status=self.status(), running=self._running())
        try:
            await msg.respond(encode(report))
        except NATS_ERRORS as exc:
            log.warning("node.control_answer_failed", error=str(exc) or type(exc).__name__)
