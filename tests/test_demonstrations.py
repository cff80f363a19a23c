"""Demonstration selectors built from specs: validation, retrieval, reranking, memoisation, fingerprints."""

from __future__ import annotations

import pytest

from openie.methods.demonstrations import (
    DemonstrationSpec,
    MemoizedRetriever,
    build_retriever,
    demonstration_selector,
    load_pool_sources,
    weights_fingerprint,
)
from openie.methods.icl import RandomDemonstrations, RetrieverDemonstrations
from openie.records import write_jsonl
from openie.testing import toy_pool
from retrievers import BM25Retriever


@pytest.fixture
def pool_file(tmp_path):
    path = tmp_path / "pool.jsonl"
    write_jsonl(toy_pool(30, relations=True), path)
    return path


@pytest.mark.parametrize(("kw", "message"), [
    ({"strategy": "tfidf", "pool": ("x",), "k": 2}, "unknown demonstration strategy 'tfidf'"),
    ({"strategy": "bm25", "pool": ("x",), "k": 0}, "needs k >= 1"),
    ({"strategy": "ruie", "pool": ("x",), "k": 2}, "needs path="),
    ({"strategy": "dense", "k": 2}, "needs a pool"),
    ({"strategy": "random", "pool": ("x",), "k": 2, "rerank": "/r"}, "rerank needs a retrieval strategy"),
])
def test_bad_specs_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        DemonstrationSpec(**kw)


def test_retrieved_demonstrations_are_of_the_query_task_and_never_the_query(pool_file):
    pool = load_pool_sources([str(pool_file)])
    query = pool[0]
    for task in ("ner", "re"):
        select = demonstration_selector(DemonstrationSpec("bm25", (str(pool_file),), 4, task=task))
        assert isinstance(select, RetrieverDemonstrations)
        demos = select(query)
        assert len(demos) == 4 and all(d.meta["task"] == task and d.text != query.text for d in demos)
    random_select = demonstration_selector(DemonstrationSpec("random", (str(pool_file),), 3))
    assert isinstance(random_select, RandomDemonstrations)
    assert demonstration_selector(DemonstrationSpec("none")) is None


def test_cells_sharing_a_pool_share_one_indexed_retriever(pool_file):
    a = build_retriever(DemonstrationSpec("bm25s", (str(pool_file),), 4))
    b = build_retriever(DemonstrationSpec("bm25s", (str(pool_file),), 8, seed=3))
    c = build_retriever(DemonstrationSpec("bm25s", (str(pool_file),), 4, options={"k1": 1.2}))
    assert a is b and a is not c


def test_memo_serves_a_smaller_k_from_a_larger_one(pool_file):
    calls = []

    class Counting(BM25Retriever):
        def retrieve(self, query, k, **kw):
            calls.append(k)
            return super().retrieve(query, k, **kw)

    inner = Counting()
    pool = load_pool_sources([str(pool_file)], task="ner")
    inner.index(pool)
    memo = MemoizedRetriever(inner)
    top8 = memo.retrieve(pool[3], 8)
    top4 = memo.retrieve(pool[3], 4)
    assert calls == [8] and top4 == top8[:4]
    memo.retrieve(pool[3], 10)
    assert calls == [8, 10]


def test_reranking_with_a_reward_model_folder(pool_file, tiny_bert_path, tmp_path):
    pytest.importorskip("torch")
    from retrievers import RetrievalPipeline
    from rewards import KeywordRewardModel

    folder = KeywordRewardModel(str(tiny_bert_path), max_length=64, show_progress=False).save(tmp_path / "reward")
    spec = DemonstrationSpec("bm25", (str(pool_file),), 3, rerank=str(folder), candidates=10)
    retriever = build_retriever(spec)
    assert isinstance(retriever.retriever, RetrievalPipeline) and retriever.retriever.candidates == 10
    query = load_pool_sources([str(pool_file)], task="ner")[0]
    assert len(retriever.retrieve(query, 3)) == 3


def test_weights_fingerprint_follows_contents_not_paths(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"weights")
        (tmp_path / name / "README.md").write_text(name)
    assert weights_fingerprint(tmp_path / "a") == weights_fingerprint(tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").write_bytes(b"retrained")
    assert weights_fingerprint(tmp_path / "a") != weights_fingerprint(tmp_path / "b")


def test_registered_pools_tag_each_record_with_its_corpus_task_and_labels(shared_data):
    pool = load_pool_sources(["conll04:train", "crossner_ai:train"], task="ner")
    assert {r.meta["dataset"] for r in pool} == {"conll04", "crossner_ai"}
    assert all(r.meta["task"] == "ner" for r in pool)
    ai = next(r for r in pool if r.meta["dataset"] == "crossner_ai")
    assert "researcher" in ai.meta["schema"]["ner"]
    with pytest.raises(ValueError, match="neither a registered corpus"):
        load_pool_sources(["nope:train"])
