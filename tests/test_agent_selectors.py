"""openie retrievers as DSPy demonstration selectors: exact kNN picks on a BM25 toy pool, per call, saved and loaded."""

from __future__ import annotations

import json

import dspy
import pytest

from openie.agent.modules import DSPyExtractor, ProgramSpec, load_program, save_program
from openie.agent.selectors import KNNFewShotProgram, RetrieverKNN, RetrieverKNNFewShot
from openie.engines.scripted import ScriptedEngine
from openie.records import Record
from openie.schema import Schema
from openie.testing import toy_pool
from retrievers.bm25 import BM25Retriever

SCHEMA = Schema.from_labels(["person", "location", "organization", "product"])
POOL = toy_pool(12)  # toy-0-0 "Greta visited Kyoto last year .", toy-0-1 "Anna joined Nokia in 1991 .", ...
QUERY = Record("q1", "Anna visited Lima last year .")


def answer(entities: list[dict[str, str]], reasoning: str | None = None) -> str:
    head = f"[[ ## reasoning ## ]]\n{reasoning}\n\n" if reasoning is not None else ""
    return head + f"[[ ## entities ## ]]\n{json.dumps(entities)}\n\n[[ ## completed ## ]]"


@pytest.fixture()
def bm25() -> BM25Retriever:
    retriever = BM25Retriever(show_progress=False)
    retriever.index(POOL)
    return retriever


def test_knn_picks_the_retrievers_nearest_records_as_labelled_examples(bm25):
    knn = RetrieverKNN(bm25, 2)
    # "anna" is the rarest shared word (toy-0-1), then the "visited ... last year" sentences (tie: pool order)
    assert [r.id for r in knn.records(QUERY.text)] == ["toy-0-1", "toy-0-0"]
    demos = knn(text=QUERY.text)
    assert [d.text for d in demos] == ["Anna joined Nokia in 1991 .", "Greta visited Kyoto last year ."]
    assert demos[1].entities == [{"text": "Greta", "type": "person"}, {"text": "Kyoto", "type": "location"}]
    assert demos[0].inputs().toDict() == {"text": "Anna joined Nokia in 1991 ."}
    # a pool record is never its own demonstration
    assert [r.id for r in knn.records(POOL[0].text)] == ["toy-0-3", "toy-0-6"]
    with pytest.raises(ValueError, match="k must be >= 1"):
        RetrieverKNN(bm25, 0)


def test_compiled_program_shows_each_call_its_own_demonstrations(bm25):
    student = dspy.Predict(ProgramSpec().build(SCHEMA).signature)
    program = RetrieverKNNFewShot(bm25, k=2).compile(student)
    assert isinstance(program, KNNFewShotProgram) and program.program is not student
    engine = ScriptedEngine(lambda r: answer([{"text": "Anna", "type": "person"}]))
    extractor = DSPyExtractor(program, engine, SCHEMA, show_progress=False)
    second = Record("q2", "The Kindle was sold by Nokia .")
    preds = extractor.extract_batch([QUERY, second])
    assert preds[0].meta["demo_ids"] == ["toy-0-1", "toy-0-0"]
    assert preds[1].meta["demo_ids"] == [r.id for r, _ in bm25.retrieve(second.text, 2)]
    assert preds[1].meta["demo_ids"][0] == "toy-0-5"  # "The Kindle was sold by Unesco ."
    first_prompt = engine.calls[0].prompt
    a, g = first_prompt.index("Anna joined Nokia in 1991 ."), first_prompt.index("Greta visited Kyoto last year .")
    assert a < g < first_prompt.rindex(QUERY.text)  # demonstrations in retrieval order, then the query
    assert '[{"text": "Greta", "type": "person"}, {"text": "Kyoto", "type": "location"}]' in first_prompt
    assert "Greta visited Kyoto" not in engine.calls[1].prompt  # demonstrations do not pile up across calls
    assert program.program.demos == [] and extractor.describe()["program"] == "knn+predict"
    assert extractor.describe()["selector"]["k"] == 2


def test_compile_indexes_a_given_training_set():
    retriever = BM25Retriever(show_progress=False)
    program = RetrieverKNNFewShot(retriever, k=1).compile(ProgramSpec().build(SCHEMA), trainset=POOL[:3])
    engine = ScriptedEngine(lambda r: answer([]))
    [pred] = DSPyExtractor(program, engine, SCHEMA, show_progress=False).extract_batch([QUERY])
    # among three records every shared word is equally rare: "visited ... last year" (toy-0-0) beats "Anna"
    assert pred.meta["demo_ids"] == ["toy-0-0"]
    assert len(retriever.pool) == 3


def test_chain_of_thought_takes_demonstrations_without_reasoning(bm25):
    program = ProgramSpec("chain_of_thought", knn_k=1).build(SCHEMA, retriever=bm25)
    engine = ScriptedEngine(lambda r: answer([{"text": "Lima", "type": "location"}], reasoning="a city"))
    [pred] = DSPyExtractor(program, engine, SCHEMA, show_progress=False).extract_batch([QUERY])
    assert pred.meta["demo_ids"] == ["toy-0-1"] and pred.meta["reasoning"] == "a city"
    assert "Anna joined Nokia in 1991 ." in engine.calls[0].prompt
    assert [e.text for e in pred.entities] == ["Lima"]


def test_knn_programs_save_and_load_with_their_retriever(tmp_path, bm25):
    spec = ProgramSpec("predict", knn_k=2, instructions="Find the names.")
    program = spec.build(SCHEMA, retriever=bm25)
    save_program(program, spec, SCHEMA, tmp_path / "knn")
    bm25.save(tmp_path / "bm25")
    loaded, loaded_spec, _ = load_program(tmp_path / "knn", retriever=BM25Retriever.load(tmp_path / "bm25"))
    assert loaded_spec.knn_k == 2 and isinstance(loaded, KNNFewShotProgram)
    engines = [ScriptedEngine(lambda r: answer([])), ScriptedEngine(lambda r: answer([]))]
    metas = [DSPyExtractor(p, e, SCHEMA, show_progress=False).extract_batch([QUERY])[0].meta["demo_ids"]
             for p, e in zip((program, loaded), engines, strict=True)]
    assert metas[0] == metas[1] == ["toy-0-1", "toy-0-0"]
    assert engines[0].calls[0].prompt == engines[1].calls[0].prompt
    assert "Find the names." in engines[1].calls[0].prompt


def test_any_openie_retriever_selects_a_dense_one_included(tiny_bert_path):
    from sentence_transformers import SentenceTransformer

    from retrievers.dense import DenseRetriever

    dense = DenseRetriever(SentenceTransformer(str(tiny_bert_path)), show_progress=False)
    program = RetrieverKNNFewShot(dense, k=3).compile(ProgramSpec().build(SCHEMA), trainset=POOL)
    engine = ScriptedEngine(lambda r: answer([]))
    [pred] = DSPyExtractor(program, engine, SCHEMA, show_progress=False).extract_batch([POOL[3]])
    expected = [r.id for r, _ in dense.retrieve(POOL[3], 3)]
    assert pred.meta["demo_ids"] == expected and "toy-0-3" not in expected and len(expected) == 3
