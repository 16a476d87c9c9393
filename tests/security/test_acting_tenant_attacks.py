"""The gateway's own NATS credentials used directly (a gateway bug, or a stolen gateway credential),
acting for a tenant's person with that person's real credential: the coordinator takes the tenant from
the credential's record and holds every such request to it (coordinator/tenants/scope.py), whatever the
gateway asks. Against a real nats-server with authentication, the permissions `claw creds` generates,
and a real coordinator and worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from common import api, verbs
from common.errors import InvalidInputError, PermissionDeniedError, TaskNotFoundError
from common.states import TaskState
from common.verbs import Role
from communication.api_client import ActingFor, ClawClient
from tests.helpers import eventually, spec
from tests.security.bus import SecuredCluster, secured_cluster

PEOPLE_ROLES = [Role.ADMIN, Role.OPERATOR, Role.APPROVER, Role.SUBMITTER, Role.VIEWER]


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[SecuredCluster]:
    async with secured_cluster(tmp_path) as running:
        yield running


async def _running(client: ClawClient, task_id: str) -> bool:
    return (await client.get_task(task_id, history=False)).state == TaskState.RUNNING


async def test_the_gateways_credentials_acting_for_a_tenant_person_cannot_reach_another_tenants_task(
    cluster: SecuredCluster,
) -> None:
    # ann's key is acme's (with every role but worker); the gateway forwards it, and says no tenant.
    ann = ActingFor("ann", None, await cluster.http_key("ann", PEOPLE_ROLES, "acme"))
    async with cluster.client("adam") as admin, cluster.client("gw") as gateway:
        theirs = (await admin.submit(spec("probe.wait", {"seconds": 120}), tenant="globex")).task_id
        ours = (await admin.submit(spec("echo", {"n": 1}), tenant="acme")).task_id
        await eventually(lambda: _running(admin, theirs), what="globex's task running")
        with capture_logs() as logs:
            for verb, request in (
                (verbs.TASK_GET, api.TaskGetRequest(task_id=theirs)),
                (verbs.TASK_CANCEL, api.TaskCancelRequest(task_id=theirs, reason="mine now")),
                (verbs.TASK_RETRY, api.TaskRetryRequest(task_id=theirs)),
                (verbs.ARTIFACTS, api.ArtifactsRequest(task_id=theirs)),
                (verbs.APPROVE, api.ApproveRequest(task_id=theirs)),
            ):
                with pytest.raises(TaskNotFoundError, match=f"no task with id {theirs}"):
                    await gateway.call(verb, request, acting_for=ann)
            with pytest.raises(InvalidInputError, match="is not yours"):
                await gateway.call(verbs.TASK_LIST, api.TaskListRequest(tenant="globex"), acting_for=ann)
            with pytest.raises(InvalidInputError, match="is not yours"):
                await gateway.call(verbs.SUBMIT, api.SubmitRequest(tasks=[spec("echo")], tenant="globex"),
                                   acting_for=ann)  # fmt: skip
            with pytest.raises(PermissionDeniedError, match="may not call dlq_purge"):
                await gateway.call(verbs.DLQ_PURGE, api.DlqPurgeRequest(), acting_for=ann)
        refused = [e for e in logs if e["event"] == "security.tenant_refused"]
        assert len(refused) == 8, refused
        assert {(e["identity"], e["acting_for"], e["tenant"]) for e in refused} == {("gw", "ann", "acme")}
        assert {e["task_id"] for e in refused if e["verb"] == "task_cancel"} == {theirs}
        # Nothing changed: globex's task still runs, and ann sees only acme's tasks.
        assert (await admin.get_task(theirs, history=False)).state == TaskState.RUNNING
        listed = await gateway.call(verbs.TASK_LIST, api.TaskListRequest(), acting_for=ann)
        assert [t.task_id for t in listed.tasks] == [ours]
        assert (await gateway.call(verbs.TASK_GET, api.TaskGetRequest(task_id=ours), acting_for=ann)).tenant == "acme"
        # Her submit is acme's whatever it leaves out.
        submitted = await gateway.call(verbs.SUBMIT, api.SubmitRequest(tasks=[spec("echo")]), acting_for=ann)
        assert (await admin.get_task(submitted.results[0].task_id, history=False)).tenant == "acme"
    async with cluster.client("oscar") as operator:
        await operator.cancel(theirs, reason="test over")


async def test_a_person_bound_to_a_tenant_stays_in_it_whatever_their_credential_says(cluster: SecuredCluster) -> None:
    # tina is bound to acme (auth.tenants): a key of every tenant gains nothing, a token of globex is refused.
    tina_key = await cluster.http_key("tina", PEOPLE_ROLES)
    tina_globex = await cluster.http_token("tina", PEOPLE_ROLES, "globex")
    oscar_key = await cluster.http_key("oscar", [Role.OPERATOR])
    async with cluster.client("adam") as admin, cluster.client("gw") as gateway:
        theirs = (await admin.submit(spec("echo", {"n": 2}), tenant="globex")).task_id
        with capture_logs() as logs:
            with pytest.raises(TaskNotFoundError):
                await gateway.call(verbs.TASK_GET, api.TaskGetRequest(task_id=theirs),
                                   acting_for=ActingFor("tina", None, tina_key))  # fmt: skip
            with pytest.raises(PermissionDeniedError, match="tina belongs to tenant 'acme'"):
                await gateway.call(verbs.TASK_GET, api.TaskGetRequest(task_id=theirs),
                                   acting_for=ActingFor("tina", "globex", tina_globex))  # fmt: skip
        events = {e["event"] for e in logs}
        assert {"security.tenant_refused", "security.acting_tenant_refused"} <= events
        # A person without a tenant, through the same gateway, still sees every tenant's task.
        view = await gateway.call(verbs.TASK_GET, api.TaskGetRequest(task_id=theirs),
                                  acting_for=ActingFor("oscar", None, oscar_key))  # fmt: skip
        assert view.tenant == "globex"


async def test_only_a_listed_gateway_may_act_for_someone(cluster: SecuredCluster) -> None:
    ann = ActingFor("ann", "acme", await cluster.http_key("ann", PEOPLE_ROLES, "acme"))
    async with cluster.client("oscar") as operator:
        with pytest.raises(PermissionDeniedError, match="may not act for others"):
            await operator.call(verbs.TASK_LIST, api.TaskListRequest(), acting_for=ann)
