"""examples/workflows/writing.yaml run by a real coordinator and worker whose LLM is the fake OpenAI
server: the outline, its chapters fanned out (at most 3 at once) and joined in order, the polish."""

from __future__ import annotations

import json

from common import api, verbs
from common.config import ClawConfig
from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import ROOT, connected_client, eventually, running_coordinator, running_worker, wait_nodes_online
from tests.integration.test_quant_skills import install
from tests.integration.test_writing_skills import FOLDERS, book_model, llm_config

__all__ = ["llm_config"]  # the fixture, shared with the writing skills' tests


async def test_the_writing_workflow_fans_chapters_out_under_its_cap_and_joins_them_in_order(
    llm_config: ClawConfig, openai_server: FakeOpenAIServer
) -> None:
    openai_server.respond = book_model
    async with (
        running_coordinator(llm_config) as coordinator,
        running_worker(llm_config) as worker,
        connected_client(llm_config) as client,
    ):
        await wait_nodes_online(client, 1)
        await install(client, worker, FOLDERS)
        await coordinator.workflows.register((ROOT / "examples" / "workflows" / "writing.yaml").read_text())
        run_id = await coordinator.workflows.start_run("writing", {"topic": "Tides", "chapters": 5})

        async def ended() -> api.WorkflowRunView | None:
            view = await client.call(verbs.WORKFLOW_SHOW, api.WorkflowRunGetRequest(run_id=run_id))
            return view if view.state != "running" else None

        view = await eventually(ended, timeout_s=90, what="the writing run to end")
        assert view.state == "succeeded", view.error
        nodes = {n.name: n for n in view.nodes}
        chapters = nodes["chapters"]
        assert chapters.items == 5 and chapters.task_states == ["succeeded"] * 5
        tasks = [await client.get_task(task_id) for task_id in chapters.task_ids]
        # The cap: never more than 3 chapter tasks running at the same moment.
        moments = sorted([(t.started_at, 1) for t in tasks] + [(t.finished_at, -1) for t in tasks])
        running = peak = 0
        for _, step in moments:
            running += step
            peak = max(peak, running)
        assert 1 <= peak <= 3
        polish = await client.get_task(nodes["polish"].task_ids[0])
        markdown = json.loads(bytes(polish.result))["markdown"]
        for i in range(1, 6):
            assert f"## {i}. Tides part {i}\n\nPolished text of chapter {i} (Tides part {i})." in markdown
        assert markdown.index("## 1.") < markdown.index("## 5.")
