"""Workflow specs checked at register time: each kind of bad spec is refused with one line naming the
node and what is wrong; the shipped examples (quant, writing) pass; expressions build inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import WorkflowSpecError
from common.skills import builtin_manifests, load_manifest
from coordinator.workflows.expressions import compile_template
from coordinator.workflows.spec import parse_spec
from coordinator.workflows.validate import CompiledWorkflow, SkillInfo, compile_workflow

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = {m.name: m for m in builtin_manifests()}
for path in sorted((ROOT / "examples" / "skills").glob("*/*/skill.yaml")):
    manifest = load_manifest(path)
    MANIFESTS[manifest.name] = manifest


def lookup(name: str) -> SkillInfo | None:
    if name == "from_code":  # offered by a worker's code: no manifest
        return SkillInfo(None)
    manifest = MANIFESTS.get(name)
    return None if manifest is None else SkillInfo(manifest, (manifest.version,))


def compiled(spec: dict[str, Any]) -> CompiledWorkflow:
    return compile_workflow(parse_spec(yaml.safe_dump(spec)), lookup)


def refused(spec: dict[str, Any] | str) -> str:
    text = spec if isinstance(spec, str) else yaml.safe_dump(spec)
    with pytest.raises(WorkflowSpecError) as caught:
        compile_workflow(parse_spec(text), lookup)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def wf(**nodes: dict[str, Any]) -> dict[str, Any]:
    return {"name": "w", "nodes": nodes}


def test_the_shipped_examples_validate_with_their_dependencies_inferred() -> None:
    quant = compile_workflow(parse_spec((ROOT / "examples/workflows/quant.yaml").read_text()), lookup)
    assert quant.order == [
        "fetch_market_data", "compute_features", "run_strategy", "backtest", "backtest_report",
        "propose_orders", "record_fills", "execution_report",
    ]  # fmt: skip
    assert quant.nodes["backtest"].deps == ("run_strategy",)
    assert quant.nodes["fetch_market_data"].version == "1.0.0"
    assert quant.downstream("backtest_report") == {
        "backtest_report", "propose_orders", "record_fills", "execution_report",
    }  # fmt: skip
    writing = compile_workflow(parse_spec((ROOT / "examples/workflows/writing.yaml").read_text()), lookup)
    assert writing.nodes["chapters"].for_each is not None and writing.nodes["polish"].deps == ("chapters",)


def test_a_cycle_is_refused_with_its_path() -> None:
    message = refused(
        wf(
            a={"skill": "echo", "input": {"x": "=nodes.c.output"}},
            b={"skill": "echo", "needs": ["a"]},
            c={"skill": "echo", "needs": ["b"]},
        )
    )
    assert "cycle" in message and "a -> c -> b -> a" in message


def test_a_node_needing_itself_is_refused() -> None:
    assert "node 'a': needs itself" in refused(wf(a={"skill": "echo", "needs": ["a"]}))


def test_an_unknown_skill_is_refused_naming_the_node() -> None:
    message = refused(wf(fetch={"skill": "no.such_skill"}))
    assert message.startswith("node 'fetch': unknown skill 'no.such_skill'") and "claw skills" in message


def test_a_pinned_version_that_is_not_the_enabled_one_is_refused() -> None:
    message = refused(wf(a={"skill": "echo@9.9.9"}))
    assert "node 'a': skill 'echo' version 9.9.9 is not the enabled one (1.0.0" in message


def test_needing_a_missing_node_is_refused() -> None:
    assert "node 'b': needs 'nope', but there is no node 'nope'" in refused(
        wf(a={"skill": "echo"}, b={"skill": "echo", "needs": ["nope"]})
    )


def test_reading_a_missing_node_is_refused() -> None:
    message = refused(wf(a={"skill": "echo", "input": {"x": "=nodes.ghost.output"}}))
    assert "node 'a': input reads nodes.ghost, but there is no node 'ghost'" in message


def test_reading_a_part_a_node_has_not_got_is_refused() -> None:
    message = refused(wf(a={"skill": "echo"}, b={"skill": "echo", "input": {"x": "=nodes.a.outputs"}}))
    assert "node 'b': input reads nodes.a.outputs; a node has only nodes.a.output and nodes.a.state" in message


def test_reading_a_field_missing_from_the_upstream_output_schema_is_refused() -> None:
    message = refused(
        wf(
            fetch={"skill": "quant.fetch_market_data"},
            feat={"skill": "quant.compute_features", "input": {"prices": "=nodes.fetch.output.closes"}},
        )
    )
    assert message.startswith("node 'feat': input reads nodes.fetch.output.closes, but skill 'quant.fetch_market_data'")
    assert "'closes'" in message and "close" in message


def test_reading_a_fan_out_output_as_an_object_is_refused() -> None:
    message = refused(
        wf(
            a={"skill": "echo", "for_each": "input.items", "input": {"n": "=item"}},
            b={"skill": "echo", "input": {"x": "=nodes.a.output.n"}},
        )
    )
    assert "node 'b'" in message and "'a' fans out" in message and "nodes.a.output[*].n" in message


def test_item_outside_a_fan_out_is_refused() -> None:
    message = refused(wf(a={"skill": "echo", "input": {"x": "=item.title"}}))
    assert message.startswith("node 'a': input uses `item`/`index`")


def test_a_bad_expression_is_refused_naming_the_node_and_field() -> None:
    message = refused(wf(a={"skill": "echo", "input": {"x": "=nodes.[["}}))
    assert message.startswith("node 'a': input.x: bad expression 'nodes.[['")


def test_an_expression_reading_an_unknown_root_is_refused() -> None:
    message = refused(wf(a={"skill": "echo", "when": "inputs.go"}))
    assert "node 'a': when reads 'inputs'" in message


def test_a_missing_required_input_field_is_refused() -> None:
    message = refused(wf(bt={"skill": "quant.backtest", "input": {"initial_capital": "=input.c"}}))
    assert message == "node 'bt': input lacks 'signals', which skill 'quant.backtest' requires"


def test_an_input_field_the_skill_does_not_accept_is_refused() -> None:
    message = refused(wf(bt={"skill": "quant.backtest", "input": {"signals": "=input.s", "capital": 1}}))
    assert "node 'bt': input field 'capital' is not accepted by skill 'quant.backtest'" in message


def test_a_literal_input_value_of_the_wrong_type_is_refused() -> None:
    message = refused(wf(bt={"skill": "quant.backtest", "input": {"signals": "=input.s", "fee_bps": "five"}}))
    assert "node 'bt': input field 'fee_bps' does not match skill 'quant.backtest'" in message
    message = refused(wf(s={"skill": "sleep", "input": {"seconds": -1}}))
    assert "node 's': input does not match skill 'sleep'" in message


def test_an_unknown_field_in_a_node_is_refused_naming_the_node() -> None:
    message = refused(wf(a={"skill": "echo", "retries": 3}))
    assert message == "node 'a': Object contains unknown field `retries`"


def test_a_node_without_a_skill_or_gate_is_refused() -> None:
    assert "node 'a': give it a `skill`" in refused(wf(a={"input": {}}))


def test_a_bad_node_name_is_refused() -> None:
    assert "node 'fetch-data': a node name" in refused(wf(**{"fetch-data": {"skill": "echo"}}))


def test_concurrency_without_a_fan_out_is_refused() -> None:
    assert "node 'a': `concurrency` caps a fan-out" in refused(wf(a={"skill": "echo", "concurrency": 2}))


def test_no_nodes_and_not_yaml_are_refused_in_one_line() -> None:
    assert "it has no nodes" in refused({"name": "w", "nodes": {}})
    assert "not valid YAML (line" in refused("name: w\nnodes: [a\n")
    assert "a workflow is a mapping" in refused("- just\n- a list\n")


def test_a_skill_offered_by_code_and_an_approval_gate_are_accepted() -> None:
    flow = compiled(wf(a={"skill": "from_code", "input": {"anything": 1}}, gate={"approval": True, "needs": ["a"]}))
    assert flow.nodes["gate"].skill == "echo" and flow.nodes["gate"].deps == ("a",)


def test_templates_evaluate_expressions_and_keep_literals() -> None:
    template = compile_template(
        {"a": "=input.x", "b": [1, "=nodes.n.output.y"], "c": "==literal", "d": {"e": "=item"}, "f": "plain"}, "t"
    )
    scope = {"input": {"x": 5}, "nodes": {"n": {"output": {"y": "why"}}}, "item": {"k": 1}}
    assert template.render(scope) == {"a": 5, "b": [1, "why"], "c": "=literal", "d": {"e": {"k": 1}}, "f": "plain"}
