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
    class WithTemplate(ScriptedEngine):
        class tokenizer:  # noqa: N801 - stands in for a tokenizer attribute
            chat_template = "{{ messages }}"

    eng = WithTemplate(lambda r: ANSWER)
    with dspy.context(lm=openie_lm(eng)):
        dspy.Predict("question -> answer")(question="Q?")
    req = eng.calls[-1]
    assert req.messages is not None and req.messages[0]["role"] == "system" and req.adapter is None
