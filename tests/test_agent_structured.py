from __future__ import annotations

import json

import dspy
import jsonschema
import pytest

from openie.agent.modules import DSPyExtractor, ProgramSpec
from openie.agent.signatures import openie_signature
from openie.agent.structured import ConstrainedJSONAdapter, close_schema, output_json_schema, tool_step_schema
from openie.engines.dspy_lm import openie_lm
from openie.engines.scripted import ScriptedEngine
from openie.records import Record
from openie.schema import Schema

SCHEMA = Schema.from_labels(["person", "location"])
TEXT = "Anna lives in Oslo ."


def test_close_schema_requires_listed_properties_and_leaves_open_mappings_open():
    schema = {"type": "object", "properties": {"a": {"type": "object", "additionalProperties": True},
                                               "b": {"type": "array", "items": {"type": "object",
                                                                                "properties": {"x": {}}}}}}
    closed = close_schema(schema)
    assert closed["required"] == ["a", "b"] and closed["additionalProperties"] is False
    assert closed["properties"]["a"] == {"type": "object", "additionalProperties": True}
    assert closed["properties"]["b"]["items"]["required"] == ["x"]
    assert "required" not in schema  # a copy
    bounded = close_schema({"type": "object", "properties": {"why": {"type": "string"},
                                                             "label": {"type": "string", "enum": ["a"]}}}, 10)
    assert bounded["properties"] == {"why": {"type": "string", "maxLength": 10}, "label": {"type": "string", "enum": ["a"]}}


def test_output_schemas_of_predict_chain_of_thought_and_react():
    sig = openie_signature(SCHEMA)
    schema = output_json_schema(sig)
    assert schema["required"] == ["entities"]
    item = schema["$defs"]["EntityItem"]
    assert item["required"] == ["text", "type"] and item["properties"]["type"]["enum"] == ["person", "location"]
    assert output_json_schema(dspy.ChainOfThought(sig).predict.signature)["required"] == ["reasoning", "entities"]
    react = dspy.ReAct(sig, tools=[dspy.Tool(lambda labels: "", name="propose_spans", desc="spans")])
    step = output_json_schema(react.react.signature)
    assert step["properties"]["next_tool_name"]["enum"] == ["propose_spans", "finish"]
    assert step["properties"]["next_tool_args"]["additionalProperties"] is True


def test_the_adapter_sends_the_signature_schema_to_the_engine():
    engine = ScriptedEngine(lambda r: '{"entities": [{"text": "Anna", "type": "person"}]}')
    sig = openie_signature(SCHEMA)
    with dspy.context(lm=openie_lm(engine), adapter=ConstrainedJSONAdapter()):
        pred = dspy.Predict(sig)(text=TEXT)
    assert engine.calls[-1].json_schema == output_json_schema(sig)
    assert [(e.text, e.type) for e in pred.entities] == [("Anna", "person")]
    with dspy.context(lm=openie_lm(engine, structured=False), adapter=ConstrainedJSONAdapter()):
        dspy.Predict(sig)(text=TEXT)
    assert engine.calls[-1].json_schema is None  # an LM without structured outputs is prompted as stock JSON


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory):
    """The session's tiny decoder, with room for DSPy's long prompts (about 900 tokens)."""
    pytest.importorskip("xgrammar")
    from openie.engines.hf import TransformersEngine
    from openie.testing import build_tiny_decoder

    path = build_tiny_decoder(tmp_path_factory.mktemp("tiny-decoder-2k") / "model", max_positions=2048)
    return TransformersEngine(path, {}, device="cpu", batch_size=2)


@pytest.mark.parametrize("kind", ["predict", "chain_of_thought"])
def test_a_random_model_writes_parseable_output_only_under_the_schema(tiny_engine, kind):
    """A random-weight model never writes DSPy's format by chance; decoded under the schema it always does."""
    program = ProgramSpec(kind).build(SCHEMA)
    record = Record("r1", TEXT)
    constrained = DSPyExtractor(program, tiny_engine, SCHEMA, dspy_adapter="json", max_text_chars=16, max_tokens=96,
                                show_progress=False)
    (pred,) = constrained.extract_batch([record])
    request = constrained.lm.engine.requests[-1]
    assert request.json_schema == output_json_schema(program.predictors()[0].signature, 16)
    assert constrained.stats.failures == 0, pred.meta
    # the raw completion is valid under the schema, unless the token limit cut it (DSPy repairs that)
    text = tiny_engine.generate([request])[0]
    if text.finish_reason == "stop":
        jsonschema.validate(json.loads(text.text), request.json_schema)

    free = DSPyExtractor(program, tiny_engine, SCHEMA, dspy_adapter="chat_only", max_tokens=96, show_progress=False)
    free.extract_batch([record])
    assert free.stats.failures == 1


def test_demonstrations_are_written_as_the_grammar_writes_answers():
    engine = ScriptedEngine(lambda r: '{"entities":[]}')
    program = dspy.Predict(openie_signature(SCHEMA))
    program.demos = [dspy.Example(text="Ada met Bo .", entities=[{"text": "Ada", "type": "person"}]).with_inputs("text")]
    with dspy.context(lm=openie_lm(engine), adapter=ConstrainedJSONAdapter()):
        program(text=TEXT)
    prompt = engine.calls[-1].prompt
    assert 'Assistant: {"entities":[{"text":"Ada","type":"person"}]}' in prompt
    assert '{\n  "entities"' not in prompt


def test_react_steps_call_each_tool_with_exactly_its_own_arguments():
    tool = dspy.Tool(lambda labels: "", name="propose_spans", desc="spans",
                     args={"labels": {"type": "array", "items": {"type": "string"}}})
    react = dspy.ReAct(openie_signature(SCHEMA), tools=[tool])
    tool_args = {name: t.args for name, t in react.tools.items()}
    schema = ConstrainedJSONAdapter(tool_args=tool_args).response_schema(react.react.signature)
    spans, finish = schema["anyOf"]
    assert spans["properties"]["next_tool_name"] == {"type": "string", "enum": ["propose_spans"]}
    assert spans["properties"]["next_tool_args"]["required"] == ["labels"]
    assert finish["properties"]["next_tool_args"] == {"type": "object", "additionalProperties": False}
    assert tool_step_schema(output_json_schema(react.react.signature), tool_args) == schema
    # the extraction step is not a tool step; another tool set is not these tools
    assert "anyOf" not in ConstrainedJSONAdapter(tool_args=tool_args).response_schema(react.extract.predict.signature)
    assert "anyOf" not in ConstrainedJSONAdapter(tool_args={"finish": {}}).response_schema(react.react.signature)


def test_a_random_model_agent_under_the_schema_only_makes_calls_its_tools_accept(tiny_engine):
    from openie.agent.tools import TypeDescriptionsTool

    program = ProgramSpec("agent", max_iters=3).build(SCHEMA, tools=[TypeDescriptionsTool(SCHEMA)])
    agent = DSPyExtractor(program, tiny_engine, SCHEMA, dspy_adapter="json", max_text_chars=12, max_tokens=64,
                          show_progress=False)
    preds = agent.extract_batch([Record("r1", TEXT), Record("r2", "Bo left Rome .")])
    calls = [c for p in preds for c in p.meta["tool_calls"]]
    assert calls and all("error" not in c and c["arguments"] == {} for c in calls), calls
    steps = [r for r in agent.lm.engine.requests if r.json_schema and "anyOf" in r.json_schema]
    assert steps and all(len(r.json_schema["anyOf"]) == 2 for r in steps)  # type_descriptions, finish
