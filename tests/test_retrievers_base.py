"""The retriever seam: protocol conformance, the no-self-demonstration and same-task rules, the factory."""

from __future__ import annotations

import numpy as np
import pytest

from openie.errors import UnknownNameError
from openie.records import Entity, Record
from retrievers import (
    BM25Retriever,
    CrossEncoderReranker,
    DenseRetriever,
    EntityKNNRetriever,
    RandomRetriever,
    RecordPool,
    Reranker,
    RetrievalPipeline,
    Retriever,
    as_demonstrations,
    create_retriever,
    list_retrievers,
    load_retriever,
)


def _rec(i: int, text: str, task: str | None = None) -> Record:
    return Record(id=f"r{i}", text=text, meta={"task": task} if task else {})


def test_every_retriever_meets_the_protocol():
    for retriever in (BM25Retriever(), BM25Retriever("bm25s"), DenseRetriever(), RandomRetriever(),
                      EntityKNNRetriever(), RetrievalPipeline(RandomRetriever())):
        assert isinstance(retriever, Retriever), retriever
    assert issubclass(CrossEncoderReranker, Reranker)


def test_as_demonstrations_keeps_the_ranking_order():
    a, b = _rec(0, "a"), _rec(1, "b")
    assert as_demonstrations([(b, 2.0), (a, 1.0)]) == [b, a]


def test_duplicates_of_the_query_and_the_query_record_itself_are_excluded():
    pool = RecordPool([_rec(0, "Paris is big ."), _rec(1, "Paris  is big .  "), _rec(2, "Rome is old ."),
                       _rec(3, "Oslo is cold .")])
    assert pool.excluded("Paris is big .") == {0, 1}  # equal up to whitespace
    assert pool.excluded(Record(id="r3", text="something else")) == {3}  # same id
    # exclude_text names the raw sentence when the query string is a formatted one; the string itself stays excluded
    assert pool.excluded("Rome is old .", exclude_text="Paris is big .") == {0, 1, 2}


def test_task_filter_keeps_the_task_and_untagged_records_and_defaults_to_the_query_task():
    pool = RecordPool([_rec(0, "a", "ner"), _rec(1, "b", "re"), _rec(2, "c"), _rec(3, "d", "ner")])
    assert pool.tasks == ["ner", "re"]
    assert list(pool.eligible_positions("q", "ner", None)) == [0, 2, 3]
    assert list(pool.eligible_positions("q", "re", None)) == [1, 2]
    assert list(pool.eligible_positions("q", None, None)) == [0, 1, 2, 3]
    assert list(pool.eligible_positions(_rec(9, "q", "re"), None, None)) == [1, 2]
    assert list(pool.eligible_positions("q", "ed", None)) == [2]  # an unknown task: untagged records only


def test_top_k_from_scores_breaks_ties_by_pool_order_and_honours_the_rules():
    pool = RecordPool([_rec(0, "x", "ner"), _rec(1, "y", "ner"), _rec(2, "z", "re"), _rec(3, "w", "ner")])
    scores = np.array([1.0, 3.0, 5.0, 1.0 + 1e-12])  # 0 and 3 tie within the rounding
    assert [r.id for r, _ in pool.top_k_from_scores(scores, 3, "q")] == ["r2", "r1", "r0"]
    assert [r.id for r, _ in pool.top_k_from_scores(scores, 3, "q", task="ner")] == ["r1", "r0", "r3"]
    assert [r.id for r, _ in pool.top_k_from_scores(scores, 10, "y", task="ner")] == ["r0", "r3"]
    assert pool.top_k_from_scores(scores, 0, "q") == []


def test_top_k_from_search_over_fetches_until_k_eligible_hits():
    records = [_rec(i, f"text {i}", "re" if i % 10 == 0 else "ner") for i in range(100)]
    pool = RecordPool(records)
    scores = np.linspace(1.0, 0.0, 100)
    requested: list[int] = []

    def search(n: int):
        requested.append(n)
        return np.arange(n), scores[:n]

    hits = pool.top_k_from_search(search, 3, "q", task="re")
    assert [r.id for r, _ in hits] == ["r0", "r10", "r20"]
    assert requested[-1] >= 21 and requested == sorted(requested)


def test_factory_builds_each_retriever_by_name_and_rejects_unknown_names():
    assert list_retrievers() == ["bm25", "bm25s", "dense", "random", "entity_knn", "pipeline"]
    assert create_retriever("bm25").backend == "rank_bm25"
    assert create_retriever("bm25s", k1=1.2).backend == "bm25s"
    assert create_retriever("random", seed=3).seed == 3
    assert create_retriever("dense", index_type="hnsw").index_type == "hnsw"
    assert create_retriever("entity_knn", aggregate="sum").aggregate == "sum"
    pipe = create_retriever("pipeline", first_stage="bm25", candidates=50)
    assert isinstance(pipe.first_stage, BM25Retriever) and pipe.reranker is None and pipe.candidates == 50
    with pytest.raises(UnknownNameError, match="known: bm25"):
        create_retriever("tfidf")


def test_load_retriever_dispatches_on_the_saved_kind(tmp_path):
    pool = [_rec(i, f"sentence number {i} about Paris") for i in range(5)]
    for name in ("bm25", "bm25s", "random"):
        retriever = create_retriever(name)
        retriever.index(pool)
        retriever.save(tmp_path / name)
        again = load_retriever(tmp_path / name)
        assert type(again) is type(retriever)
        assert again.retrieve("Paris", 3) == retriever.retrieve("Paris", 3)
    with pytest.raises(FileNotFoundError):
        load_retriever(tmp_path / "nothing")


def test_entity_annotations_survive_the_pool_round_trip(tmp_path):
    record = Record(id="e", text="Paris is big", entities=[Entity(0, 5, "location", "Paris")], meta={"task": "ner"})
    RecordPool([record]).save(tmp_path)
    assert RecordPool.load(tmp_path).records == [record]
