from __future__ import annotations

import dspy

from openie.engines.dspy_lm import adapter_from_model, openie_lm
from openie.engines.scripted import ScriptedEngine

ANSWER = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"


def test_adapter_from_model_name():
    assert adapter_from_model("openie/base") is None
    assert adapter_from_model("openie/ner-de") == "ner-de"


def test_dspy_predict_runs_on_an_openie_engine_with_the_named_adapter():
    eng = ScriptedEngine(lambda r: ANSWER)
    lm = openie_lm(eng, adapter="ner-en", max_tokens=64)
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer")(question="Capital of France?")
    assert pred.answer == "Paris"
    req = eng.calls[-1]
    assert req.adapter == "ner-en" and req.max_tokens == 64 and "Capital of France?" in req.prompt


def test_chat_template_models_get_messages():
    from openie.engines.base import EngineCapabilities

    class Tokenizer:
        chat_template = "{{ messages }}"

    class WithTemplate(ScriptedEngine):
        @property
        def capabilities(self):  # the engine declares the tokenizer it encodes prompts with
            return EngineCapabilities(tokenizer=Tokenizer())

    eng = WithTemplate(lambda r: ANSWER)
    with dspy.context(lm=openie_lm(eng)):
        dspy.Predict("question -> answer")(question="Q?")
    req = eng.calls[-1]
    assert req.messages is not None and req.messages[0]["role"] == "system" and req.adapter is None


def test_response_format_becomes_the_engines_json_schema_unless_structured_is_off():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    reply = '{"answer": "Paris"}'
    eng = ScriptedEngine(lambda r: reply)
    lm = openie_lm(eng)
    assert lm.supports_response_schema and "response_format" in lm.supported_params
    lm(messages=[{"role": "user", "content": "Q?"}], response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": schema}})
    assert eng.calls[-1].json_schema == schema
    lm(messages=[{"role": "user", "content": "Q?"}], response_format={"type": "json_object"})
    assert eng.calls[-1].json_schema == {"type": "object"}
    lm("Q?")
    assert eng.calls[-1].json_schema is None

    plain = openie_lm(eng, structured=False)
    assert not plain.supports_response_schema and "response_format" not in plain.supported_params
    with dspy.context(lm=plain, adapter=dspy.JSONAdapter()):
        assert dspy.Predict("question -> answer")(question="Q?").answer == "Paris"
    assert eng.calls[-1].json_schema is None
