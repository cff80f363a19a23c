"""Reranking with a real (tiny, briefly trained) cross-encoder, and the first stage -> rerank pipeline."""

from __future__ import annotations

import pytest

from openie.records import Record
from retrievers import (
    BM25Retriever,
    CrossEncoderReranker,
    RandomRetriever,
    RetrievalPipeline,
    Retriever,
    create_retriever,
    load_retriever,
)

PEOPLE = ["Alice Johnson", "Bob Smith", "Carlos Diaz", "Dana Lee", "Elena Rossi", "Farid Khan"]


@pytest.fixture(scope="module")
def cross_encoder(tiny_bert_path):
    """A CrossEncoder from the tiny BERT, trained for 40 steps on a toy task over the test pool: sentences
    mentioning London are relevant, all others are not (whatever the query says)."""
    import torch
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(tiny_bert_path), num_labels=1)
    pairs = [(query, record.text) for query in ("Who visited Berlin in March ?", "q") for record in _pool()]
    labels = torch.tensor([1.0 if "London" in candidate else 0.0 for _, candidate in pairs])
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        logits = model(model.preprocess(pairs))["scores"].view(-1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def saved_cross_encoder(cross_encoder, tmp_path_factory):
    path = tmp_path_factory.mktemp("cross-encoder") / "model"
    cross_encoder.save_pretrained(str(path))
    return path


def _pool() -> list[Record]:
    """Berlin sentences share more words with the test query; London ones are what the reranker learned to like."""
    texts = [f"{person} visited Berlin in March ." for person in PEOPLE]
    texts += [f"{person} visited London in March ." for person in PEOPLE]
    texts += ["The weather was cold in January .", "Siemens praised Reuters in Tokyo ."]
    return [Record(id=f"p{i}", text=t) for i, t in enumerate(texts)]


def test_reranker_flips_the_first_stage_order(cross_encoder):
    first_stage = BM25Retriever(show_progress=False)
    first_stage.index(_pool())
    query = "Who visited Berlin in March ?"
    candidates = first_stage.retrieve(query, 12)
    assert all("Berlin" in r.text for r, _ in candidates[:6])  # lexical overlap puts Berlin first
    reranked = CrossEncoderReranker(cross_encoder).rerank(query, candidates, 12)
    assert sorted(r.id for r, _ in reranked) == sorted(r.id for r, _ in candidates)  # re-scored, nothing lost
    assert all("London" in r.text for r, _ in reranked[:6]), [r.text for r, _ in reranked]
    assert [s for _, s in reranked] == sorted((s for _, s in reranked), reverse=True)
    assert len(CrossEncoderReranker(cross_encoder).rerank(query, candidates, 3)) == 3


def test_formatters_shape_the_scored_texts(cross_encoder):
    seen: list[str] = []

    def candidate_text(record: Record) -> str:
        seen.append(record.id)
        return record.text.replace("London", "Berlin")  # hide what the model learned to like

    reranker = CrossEncoderReranker(cross_encoder, format_candidate=candidate_text,
                                    format_query=lambda q: f"query: {q}")
    pool = _pool()
    scores = dict((r.id, s) for r, s in reranker.rerank("q", [(r, 0.0) for r in pool[:12]], 12))
    assert sorted(seen) == sorted(r.id for r in pool[:12])
    for i in range(6):  # a London sentence now reads exactly like its Berlin twin
        assert scores[f"p{i}"] == pytest.approx(scores[f"p{i + 6}"], abs=1e-5)


def test_a_reranker_needs_a_trained_model():
    with pytest.raises(ValueError, match="trained"):
        CrossEncoderReranker(None)
    with pytest.raises(ValueError, match="bi-encoder"):
        CrossEncoderReranker("minilm")


def test_pipeline_composes_first_stage_and_reranker(cross_encoder):
    pipeline = RetrievalPipeline(BM25Retriever(show_progress=False), CrossEncoderReranker(cross_encoder), candidates=12)
    assert isinstance(pipeline, Retriever)
    pipeline.index(_pool())
    query = "Who visited Berlin in March ?"
    top = pipeline.retrieve(query, 3)
    assert len(top) == 3 and all("London" in r.text for r, _ in top)
    # the reranker only sees the first stage's candidates: with 4 of them, all Berlin, no London can come back
    narrow = RetrievalPipeline(pipeline.first_stage, pipeline.reranker, candidates=4)
    assert all("Berlin" in r.text for r, _ in narrow.retrieve(query, 3))
    # without a reranker the pipeline is the first stage, truncated
    plain = RetrievalPipeline(pipeline.first_stage, None, candidates=12)
    assert plain.retrieve(query, 3) == pipeline.first_stage.retrieve(query, 3)
    assert pipeline.retrieve(query, 0) == []


def test_pipeline_keeps_the_duplicate_and_task_rules(cross_encoder):
    pool = [Record(id=r.id, text=r.text, meta={"task": "re" if i % 2 else "ner"}) for i, r in enumerate(_pool())]
    pipeline = RetrievalPipeline(RandomRetriever(seed=1), CrossEncoderReranker(cross_encoder), candidates=100)
    pipeline.index(pool)
    query = pool[7]  # a London sentence, task "re"
    results = pipeline.retrieve(query, 10)
    assert query.id not in [r.id for r, _ in results]
    assert all(r.meta["task"] == "re" for r, _ in results) and len(results) == 6  # the other 6 "re" records


def test_pipeline_save_load_round_trip(saved_cross_encoder, cross_encoder, tmp_path):
    pipeline = create_retriever("pipeline", first_stage="bm25s", reranker=str(saved_cross_encoder), candidates=12)
    pipeline.index(_pool())
    query = "Who visited Berlin in March ?"
    expected = pipeline.retrieve(query, 5)
    assert all("London" in r.text for r, _ in expected)  # the saved model reranks like the trained one
    pipeline.save(tmp_path / "pipe")
    again = load_retriever(tmp_path / "pipe")
    assert isinstance(again, RetrievalPipeline) and isinstance(again.first_stage, BM25Retriever)
    assert again.first_stage.backend == "bm25s" and again.candidates == 12
    assert [r.id for r, _ in again.retrieve(query, 5)] == [r.id for r, _ in expected]
    # an in-memory reranker is not written down: load asks for it
    in_memory = RetrievalPipeline(BM25Retriever(show_progress=False), CrossEncoderReranker(cross_encoder))
    in_memory.index(_pool())
    in_memory.save(tmp_path / "mem")
    with pytest.raises(ValueError, match="reranker="):
        RetrievalPipeline.load(tmp_path / "mem")
    restored = RetrievalPipeline.load(tmp_path / "mem", reranker=CrossEncoderReranker(cross_encoder))
    assert restored.retrieve(query, 3) == in_memory.retrieve(query, 3)
