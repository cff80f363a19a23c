"""The agent's tools on real tiny components: a GLiNER, an NER Retriever, a BM25 retriever, a schema."""

from __future__ import annotations

import json

import pytest

from openie.agent.tools import (
    AgentTool,
    AgentToolError,
    DemonstrationTool,
    SimilarMentionsTool,
    SpanProposalTool,
    TypeDescriptionsTool,
    as_dspy_tools,
)
from openie.agent.trace import traced
from openie.records import Record
from openie.schema import Schema
from openie.testing import toy_pool

SCHEMA = Schema.from_labels({"person": "a human being", "location": "a city or country", "organization": None,
                             "product": None})
POOL = toy_pool(12)
QUERY = "Anna visited Lima last year ."


@pytest.fixture(scope="module")
def gliner(tiny_gliner_path):
    from openie.tools.gliner import GLiNERTool

    return GLiNERTool.load(tiny_gliner_path, show_progress=False)


@pytest.fixture(scope="module")
def ner_retriever(tiny_decoder_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openie.tools.ner_retriever import GoldMentions, HookPoint, MentionEncoder, NERRetriever

    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path).eval()
    encoder = MentionEncoder(model, AutoTokenizer.from_pretrained(tiny_decoder_path), HookPoint(1), show_progress=False)
    retriever = NERRetriever(encoder, show_progress=False)
    retriever.index_records(POOL, GoldMentions())
    return retriever


def test_every_tool_meets_the_protocol(toy_bm25):
    assert isinstance(TypeDescriptionsTool(SCHEMA), AgentTool)
    assert isinstance(DemonstrationTool(toy_bm25), AgentTool)


def test_type_descriptions_tool_shows_the_schema():
    tool = TypeDescriptionsTool(SCHEMA)
    assert json.loads(tool(QUERY)) == {"person": "a human being", "location": "a city or country",
                                       "organization": "", "product": ""}
    assert tool.args == {} and tool.describe() == {"name": "type_descriptions", "task": "ner"}


def test_demonstration_tool_returns_the_retrievers_top_k_with_gold_output_never_the_input(toy_bm25):
    tool = DemonstrationTool(toy_bm25, k=2)
    expected = [r for r, _ in toy_bm25.retrieve(QUERY, 2)]
    got = json.loads(tool(QUERY))
    assert [d["text"] for d in got] == [r.text for r in expected]
    assert got[0]["entities"] == [{"text": e.text, "type": e.label} for e in expected[0].entities]
    assert [d["text"] for d in json.loads(tool(QUERY, query="Oxfam"))] == [
        r.text for r, _ in toy_bm25.retrieve("Oxfam", 2, exclude_text=QUERY)]
    # the input itself is in the pool: it is never its own demonstration
    own = POOL[0].text
    assert own not in [d["text"] for d in json.loads(tool(own, query=own))]
    assert len(json.loads(tool(own))) == 2


def test_span_proposal_tool_reports_gliners_typed_spans_best_first(gliner):
    tool = SpanProposalTool(gliner, default_labels=["person"], threshold=0.0, max_results=3)
    out = json.loads(tool(QUERY, labels=["person", "location", "person"]))
    direct = gliner.predict([QUERY], ["person", "location"], threshold=0.0)[0]
    best = sorted(direct, key=lambda e: (-(e.score or 0.0), e.start))[:3]
    assert out == [{"text": e.text, "type": e.label, "score": round(float(e.score), 3)} for e in best]
    assert len(out) == 3 and all(QUERY[e.start:e.end] == e.text for e in best)
    assert [d["type"] for d in json.loads(tool(QUERY, labels=[]))] == ["person"] * 3  # the default labels
    assert tool(QUERY, labels="location") == tool(QUERY, labels=["location"])
    assert tool.describe()["weights"] == gliner.fingerprint()
    with pytest.raises(AgentToolError, match="at least one entity type"):
        SpanProposalTool(gliner)(QUERY, labels=[])


def test_similar_mentions_tool_finds_typed_mentions_in_other_documents(ner_retriever):
    tool = SimilarMentionsTool(ner_retriever, POOL, k=3, context_chars=10)
    own = POOL[0]
    out = json.loads(tool(own.text, description="a city"))
    assert len(out) == 3
    docs = {r.id: r for r in POOL}
    hits = [h for h in ner_retriever.search("a city", 7) if docs[h.doc_id].text != own.text][:3]
    for got, hit in zip(out, hits, strict=True):
        doc = docs[hit.doc_id]
        s, e = hit.mention
        assert got["mention"] == doc.text[s:e]
        assert got["type"] == next(x.label for x in doc.entities if x.span == (s, e))
        assert got["context"] == doc.text[max(0, s - 10):e + 10]
    with pytest.raises(AgentToolError, match="needs a description"):
        tool(own.text, description=" ")
    with pytest.raises(AgentToolError, match="none of the 12 documents the NER Retriever indexed are given here"):
        SimilarMentionsTool(ner_retriever, [Record("other", "Lima .")])


def test_similar_mentions_shows_only_the_pools_part_of_a_larger_index(ner_retriever):
    part = POOL[::2]  # the index holds all 12 documents; this run's pool is 6 of them
    tool = SimilarMentionsTool(ner_retriever, part, k=3)
    out = json.loads(tool(QUERY, description="a city"))
    texts = {r.text for r in part}
    assert len(out) == 3 and all(any(hit["context"] in t for t in texts) for hit in out)
    inside = [h for h in ner_retriever.search("a city", 12) if h.doc_id in {r.id for r in part}][:3]
    assert [o["mention"] for o in out] == [next(r for r in part if r.id == h.doc_id).text[slice(*h.mention)]
                                          for h in inside]


def test_dspy_tools_are_bound_to_the_traced_input_and_log_every_call(toy_bm25, gliner):
    [types, demos] = as_dspy_tools([TypeDescriptionsTool(SCHEMA), DemonstrationTool(toy_bm25, k=1)])
    assert (types.name, demos.name) == ("type_descriptions", "retrieve_demonstrations")
    assert demos.args["query"]["type"] == "string"
    [spans] = as_dspy_tools([SpanProposalTool(gliner, threshold=0.0, max_results=1)])
    with traced(QUERY) as trace:
        spans(labels="person")  # one type as a plain string passes the tool's argument schema
        trace.tool_calls.clear()
        types()
        demos(query="")
        with pytest.raises(AgentToolError, match=r"takes \['query'\], not \['question'\]"):
            demos(question="x")
    first = [r for r, _ in toy_bm25.retrieve(QUERY, 1)][0]
    assert [(c.name, c.arguments) for c in trace.tool_calls] == [
        ("type_descriptions", {}), ("retrieve_demonstrations", {"query": ""}), ("retrieve_demonstrations", {"question": "x"})]
    assert json.loads(trace.tool_calls[1].result)[0]["text"] == first.text
    assert trace.tool_calls[2].error == "AgentToolError: retrieve_demonstrations takes ['query'], not ['question']"
    with pytest.raises(AgentToolError, match="outside a program call"):
        types()


def test_tool_names_must_be_unique_and_not_finish():
    class Finish(TypeDescriptionsTool):
        name = "finish"

    with pytest.raises(AgentToolError, match="share a name"):
        as_dspy_tools([TypeDescriptionsTool(SCHEMA), TypeDescriptionsTool(SCHEMA)])
    with pytest.raises(AgentToolError, match="agent's own tool"):
        as_dspy_tools([Finish(SCHEMA)])


def test_copies_of_a_tool_share_it(gliner):
    import copy

    tool = SpanProposalTool(gliner)
    assert copy.deepcopy(tool) is tool
