"""Extraction programs through the DSPy extractor on a scripted engine: records, meta, stats, the agent's log."""

from __future__ import annotations

import json

import dspy
import pytest

from openie.agent.modules import DSPyExtractor, ProgramError, ProgramSpec, load_program, program_kind, save_program
from openie.agent.tools import DemonstrationTool, SimilarMentionsTool, SpanProposalTool, TypeDescriptionsTool
from openie.agent.trace import summarize
from openie.engines.scripted import ScriptedEngine
from openie.errors import UnknownNameError
from openie.records import Entity, Record
from openie.schema import Schema
from openie.testing import toy_pool

SCHEMA = Schema.from_labels({"person": "a human being", "location": "a city or country", "organization": None,
                             "product": None})
POOL = toy_pool(12)
RECORDS = [Record("q1", "Anna visited Lima last year ."), Record("q2", "Boris joined Nokia in 2001 .")]
ANSWERS = {"q1": [("Anna", "person"), ("Lima", "location")], "q2": [("Boris", "person"), ("Nokia", "organization")]}


def answer(**fields: object) -> str:
    def value(v: object) -> str:
        return v if isinstance(v, str) else json.dumps(v)

    return "\n\n".join(f"[[ ## {k} ## ]]\n{value(v)}" for k, v in fields.items()) + "\n\n[[ ## completed ## ]]"


def entities(pairs) -> list[dict[str, str]]:
    return [{"text": t, "type": y} for t, y in pairs]


def last_text(prompt: str) -> str:
    """The ``text`` input of the call (the last one in the transcript: demonstrations come first)."""
    return prompt.rsplit("[[ ## text ## ]]\n", 1)[1].split("\n\n", 1)[0]


def oracle(request) -> str:
    """Answers every record of RECORDS correctly (and adds CoT reasoning when asked for)."""
    text = last_text(request.prompt)
    rid = next(r.id for r in RECORDS if r.text == text)
    fields = {"reasoning": f"names in {rid}"} if "`reasoning`" in request.prompt else {}
    return answer(**fields, entities=entities(ANSWERS[rid]))


def test_predict_extractor_gives_grounded_records_and_counts_prompts_and_tokens():
    engine = ScriptedEngine(oracle)
    extractor = DSPyExtractor(ProgramSpec("predict").build(SCHEMA), engine, SCHEMA, batch_size=1, show_progress=False)
    preds = list(extractor.extract(RECORDS))
    assert [p.id for p in preds] == ["q1", "q2"]
    assert preds[0].entities == [Entity(0, 4, "person", "Anna"), Entity(13, 17, "location", "Lima")]
    assert preds[1].entities == [Entity(0, 5, "person", "Boris"), Entity(13, 18, "organization", "Nokia")]
    assert preds[0].meta["method"] == "dspy.predict" and preds[0].meta["lm_calls"] == 1
    assert "tool_calls" not in preds[0].meta and "reasoning" not in preds[0].meta
    gens = engine.generate(engine.calls[:2])  # the same requests again: the token counts the extractor saw
    s = extractor.stats
    assert (s.records, s.prompts, s.entities, s.failures) == (2, 2, 4, 0)
    assert s.prompt_tokens == sum(g.prompt_tokens for g in gens) and s.completion_tokens == sum(
        g.completion_tokens for g in gens)
    assert engine.calls[0].adapter is None and engine.calls[0].max_tokens == 512


def test_chain_of_thought_reasoning_lands_in_meta_and_the_adapter_is_used():
    engine = ScriptedEngine(oracle)
    extractor = DSPyExtractor(ProgramSpec("chain_of_thought").build(SCHEMA), engine, SCHEMA, adapter="ner-en",
                              max_tokens=64, show_progress=False)
    [pred] = extractor.extract_batch(RECORDS[:1])
    assert pred.meta["reasoning"] == "names in q1" and pred.meta["method"] == "dspy.chain_of_thought"
    assert len(pred.entities) == 2
    assert engine.calls[0].adapter == "ner-en" and engine.calls[0].max_tokens == 64


def test_unparseable_output_becomes_a_recorded_problem_not_an_exception():
    engine = ScriptedEngine(lambda r: "I cannot do that.")
    extractor = DSPyExtractor(ProgramSpec("predict").build(SCHEMA), engine, SCHEMA, show_progress=False)
    [pred] = extractor.extract_batch(RECORDS[:1])
    assert pred.entities == [] and pred.meta["lm_calls"] == 2  # DSPy's chat answer, then its JSON-mode retry
    [problem] = pred.meta["parse_problems"]
    assert problem["kind"] == "syntax" and problem["detail"].startswith("the program failed: AdapterParseError")
    assert extractor.stats.failures == 1 and extractor.stats.parse_problems == 1
    once = DSPyExtractor(ProgramSpec("predict").build(SCHEMA), engine, SCHEMA, dspy_adapter="chat_only",
                         show_progress=False)
    assert once.extract_batch(RECORDS[:1])[0].meta["lm_calls"] == 1


def test_engine_failures_stop_the_run_instead_of_becoming_problems():
    from dspy.utils.exceptions import LMError

    extractor = DSPyExtractor(ProgramSpec().build(SCHEMA), ScriptedEngine([]), SCHEMA, show_progress=False)
    with pytest.raises(LMError, match="ran out of outputs"):
        extractor.extract_batch(RECORDS[:1])


def step(tool: str, args: dict, thought: str = "next") -> str:
    return answer(next_thought=thought, next_tool_name=tool, next_tool_args=args)


@pytest.fixture(scope="module")
def all_tools(toy_bm25, tiny_gliner_path, tiny_decoder_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openie.tools.gliner import GLiNERTool
    from openie.tools.ner_retriever import GoldMentions, HookPoint, MentionEncoder, NERRetriever

    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path).eval()
    encoder = MentionEncoder(model, AutoTokenizer.from_pretrained(tiny_decoder_path), HookPoint(1), show_progress=False)
    ner_retriever = NERRetriever(encoder, show_progress=False)
    ner_retriever.index_records(POOL, GoldMentions())
    gliner = GLiNERTool.load(tiny_gliner_path, show_progress=False)
    return [TypeDescriptionsTool(SCHEMA), SpanProposalTool(gliner, threshold=0.0, max_results=2),
            SimilarMentionsTool(ner_retriever, POOL, k=2), DemonstrationTool(toy_bm25, k=2)]


def test_the_agent_calls_each_tool_and_the_prediction_logs_every_call(all_tools):
    calls = [("type_descriptions", {}), ("propose_spans", {"labels": ["person", "location"]}),
             ("similar_mentions", {"description": "a city"}), ("retrieve_demonstrations", {"query": "visited"})]
    script = [step(name, args, f"thought {i}") for i, (name, args) in enumerate(calls)]
    script += [step("finish", {}), answer(reasoning="the tools agree", entities=entities(ANSWERS["q1"]))]
    engine = ScriptedEngine(script)
    extractor = DSPyExtractor(ProgramSpec("agent", max_iters=6).build(SCHEMA, tools=all_tools), engine, SCHEMA,
                              show_progress=False)
    [pred] = extractor.extract_batch(RECORDS[:1])
    text = RECORDS[0].text
    expected = [all_tools[0](text), all_tools[1](text, labels=["person", "location"]),
                all_tools[2](text, description="a city"), all_tools[3](text, query="visited")]
    assert pred.meta["tool_calls"] == [{"name": n, "arguments": a, "result": summarize(r)}
                                       for (n, a), r in zip(calls, expected, strict=True)]
    assert pred.meta["n_tool_calls"] == 4 and extractor.stats.tool_calls == 4 and extractor.stats.mean_tool_calls == 4
    assert pred.meta["agent_steps"] == 5 and pred.meta["finished"] is True and pred.meta["lm_calls"] == 6
    assert pred.meta["reasoning"] == "the tools agree" and pred.meta["method"] == "dspy.agent"
    assert pred.entities == [Entity(0, 4, "person", "Anna"), Entity(13, 17, "location", "Lima")]
    # each observation reaches the model in the next step's trajectory
    for i, result in enumerate(expected):
        assert f"[[ ## observation_{i} ## ]]\n{result}" in engine.calls[i + 1].prompt
    assert "(2) propose_spans, whose description is <desc>Find candidate mentions" in engine.calls[0].prompt
    tools = extractor.describe()["tools"]
    assert [t["name"] for t in tools] == [n for n, _ in calls] and extractor.describe()["max_iters"] == 6


def test_a_failing_agent_keeps_the_tool_calls_it_made(toy_bm25):
    engine = ScriptedEngine([step("retrieve_demonstrations", {"query": ""}), step("retrieve_demonstrations", {"k": 3})],
                            default="garbage")
    program = ProgramSpec("agent").build(SCHEMA, tools=[DemonstrationTool(toy_bm25, k=1)])
    extractor = DSPyExtractor(program, engine, SCHEMA, show_progress=False)
    [pred] = extractor.extract_batch(RECORDS[:1])
    assert [(c["name"], c["arguments"]) for c in pred.meta["tool_calls"]] == [
        ("retrieve_demonstrations", {"query": ""}), ("retrieve_demonstrations", {"k": 3})]
    assert pred.meta["tool_calls"][1]["error"] == "AgentToolError: retrieve_demonstrations takes ['query'], not ['k']"
    assert pred.meta["n_tool_calls"] == 2 and extractor.stats.failures == 1
    assert pred.meta["parse_problems"][0]["detail"].startswith("the program failed")


class SizedEngine(ScriptedEngine):
    """A scripted engine that remembers how many requests each ``generate`` call carried."""

    def __init__(self, outputs):
        super().__init__(outputs)
        self.sizes: list[int] = []

    def generate(self, requests):
        self.sizes.append(len(requests))
        return super().generate(requests)


PLANS = {"q1": [("type_descriptions", {}), ("finish", {})],
         "q2": [("retrieve_demonstrations", {"query": ""}), ("type_descriptions", {}), ("finish", {})]}


def planned_agent(request) -> str:
    """Each record's own tool plan, step by step (the step is the number of observations so far)."""
    rid = next(r.id for r in RECORDS if r.text == last_text(request.prompt))
    if "`next_tool_name`" not in request.prompt:
        return answer(reasoning=f"done {rid}", entities=entities(ANSWERS[rid]))
    name, args = PLANS[rid][request.prompt.count("[[ ## observation_")]
    return step(name, args)


def test_records_of_a_batch_run_at_once_with_their_calls_batched_and_their_logs_apart(toy_bm25):
    tools = [TypeDescriptionsTool(SCHEMA), DemonstrationTool(toy_bm25, k=1)]
    runs = {}
    for concurrent in (False, True):
        engine = SizedEngine(planned_agent)
        extractor = DSPyExtractor(ProgramSpec("agent", max_iters=4).build(SCHEMA, tools=tools), engine, SCHEMA,
                                  concurrent=concurrent, show_progress=False)
        extractor.batcher.max_wait_s = 30.0  # batches leave when every record in flight is waiting, never on time
        runs[concurrent] = (extractor.extract_batch(RECORDS), engine, extractor.stats)
    (seq, seq_engine, seq_stats), (con, con_engine, con_stats) = runs[False], runs[True]
    assert [p.to_dict() for p in con] == [p.to_dict() for p in seq]
    assert [c["name"] for c in con[0].meta["tool_calls"]] == ["type_descriptions"]
    assert [c["name"] for c in con[1].meta["tool_calls"]] == ["retrieve_demonstrations", "type_descriptions"]
    assert [p.meta["lm_calls"] for p in con] == [3, 4] and con[1].meta["reasoning"] == "done q2"
    assert con_stats == seq_stats and con_stats.prompts == 7 and con_stats.tool_calls == 3
    assert set(seq_engine.sizes) == {1} and con_engine.sizes == [2, 2, 2, 1]  # q2's last call: q1 is done
    assert sorted(r.prompt for r in con_engine.calls) == sorted(r.prompt for r in seq_engine.calls)


def test_long_texts_are_chunked_and_merged_at_global_offsets():
    text = "Anna visited Lima . Then Boris joined Nokia in 2001 ."

    def by_chunk(request) -> str:
        chunk = last_text(request.prompt)
        found = [(t, y) for pairs in ANSWERS.values() for t, y in pairs if t in chunk]
        return answer(entities=entities(found))

    extractor = DSPyExtractor(ProgramSpec("predict").build(SCHEMA), ScriptedEngine(by_chunk), SCHEMA,
                              max_words_per_chunk=6, chunk_overlap_words=1, show_progress=False)
    [pred] = extractor.extract_batch([Record("long", text)])
    assert pred.entities == [Entity(0, 4, "person", "Anna"), Entity(13, 17, "location", "Lima"),
                             Entity(25, 30, "person", "Boris"), Entity(38, 43, "organization", "Nokia")]
    # whole sentences first: "Anna visited Lima ." alone, then the 7-word sentence cut at 6 words
    assert pred.meta["chunks"] == 3 and pred.meta["lm_calls"] == 3 and extractor.stats.chunked_records == 1
    assert pred.meta["coverage"]["chars_not_seen"] == 0 and pred.meta["coverage"]["chunks"] == 3


def test_describe_changes_with_the_compiled_state():
    program = ProgramSpec("predict").build(SCHEMA)
    extractor = DSPyExtractor(program, ScriptedEngine(oracle), SCHEMA, show_progress=False)
    before = extractor.describe()
    assert before["program"] == "predict" and before["demos"] == {"self": 0} and before["engine"] == "scripted"
    program.demos = [dspy.Example(text="x", entities=[]).with_inputs("text")]
    after = extractor.describe()
    assert after["state"] != before["state"] and after["demos"] == {"self": 1}


def test_program_specs_are_checked():
    with pytest.raises(UnknownNameError, match="cot"):
        ProgramSpec("cot")
    with pytest.raises(ProgramError, match="tools are for the agent"):
        ProgramSpec("predict").build(SCHEMA, tools=[TypeDescriptionsTool(SCHEMA)])
    with pytest.raises(ProgramError, match="needs the retriever"):
        ProgramSpec("predict", knn_k=2).build(SCHEMA)
    with pytest.raises(UnknownNameError, match="DSPy adapter"):
        DSPyExtractor(ProgramSpec().build(SCHEMA), ScriptedEngine(oracle), SCHEMA, dspy_adapter="xml")
    assert program_kind(ProgramSpec("chain_of_thought").build(SCHEMA)) == "chain_of_thought"


def test_saved_programs_load_with_their_state_and_give_the_same_prompts(tmp_path):
    spec = ProgramSpec("chain_of_thought")
    program = spec.build(SCHEMA)
    program.predict.demos = [dspy.Example(text="Greta visited Oslo .", reasoning="a person and a city",
                                          entities=entities([("Greta", "person"), ("Oslo", "location")])).with_inputs("text")]
    save_program(program, spec, SCHEMA, tmp_path / "cot")
    loaded, loaded_spec, loaded_schema = load_program(tmp_path / "cot")
    assert loaded_spec == spec and loaded_schema == SCHEMA
    engines = [ScriptedEngine(oracle), ScriptedEngine(oracle)]
    preds = [DSPyExtractor(p, e, SCHEMA, show_progress=False).extract_batch(RECORDS)
             for p, e in zip((program, loaded), engines, strict=True)]
    assert [c.prompt for c in engines[0].calls] == [c.prompt for c in engines[1].calls]
    assert "Greta visited Oslo ." in engines[1].calls[0].prompt
    assert [p.entities for p in preds[0]] == [p.entities for p in preds[1]]


def test_a_saved_agent_needs_its_tools_back(tmp_path, toy_bm25):
    spec = ProgramSpec("agent")
    tools = [TypeDescriptionsTool(SCHEMA), DemonstrationTool(toy_bm25)]
    save_program(spec.build(SCHEMA, tools=tools), spec, SCHEMA, tmp_path / "agent")
    with pytest.raises(ProgramError, match=r"saved with tools \['type_descriptions', 'retrieve_demonstrations'\]"):
        load_program(tmp_path / "agent", tools=tools[:1])
    loaded, _, _ = load_program(tmp_path / "agent", tools=tools)
    assert [t.name for t in loaded.tools] == ["type_descriptions", "retrieve_demonstrations"]
    with pytest.raises(ProgramError, match="not a saved DSPy program"):
        load_program(tmp_path / "nothing")
