"""Dense retrieval: a real sentence-transformers encoder (tiny BERT) over real faiss indexes."""

from __future__ import annotations

import numpy as np
import pytest

from openie.datasets import load_dataset
from openie.records import Record
from retrievers import DenseRetriever, RandomRetriever, SentenceEncoder
from retrievers.dense import build_faiss_index, search_faiss


@pytest.fixture(scope="module")
def pool(shared_data):
    return load_dataset("conll2003", "dev", data_root=shared_data)[:300]


@pytest.fixture(scope="module")
def encoder(tiny_bert_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_bert_path))


@pytest.fixture(scope="module")
def flat(encoder, pool):
    retriever = DenseRetriever(encoder, show_progress=False)
    retriever.index(pool)
    return retriever


def test_embeddings_are_unit_length_and_prefixes_are_applied(encoder, tiny_bert_path):
    enc = SentenceEncoder(str(tiny_bert_path), query_prefix="query: ", passage_prefix="passage: ")
    vectors = enc.encode(["Paris is big", "Rome"], kind="passage")
    assert vectors.dtype == np.float32 and vectors.shape == (2, enc.dimension)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    expected = encoder.encode(["query: Paris is big"], normalize_embeddings=True)
    np.testing.assert_allclose(enc.encode(["Paris is big"], kind="query"), expected, atol=1e-6)
    assert not np.allclose(enc.encode(["Paris is big"], kind="query"), vectors[:1])
    assert enc.encode([], kind="query").shape == (0, enc.dimension)
    with pytest.raises(ValueError, match="kind"):
        enc.encode(["x"], kind="document")


def test_scores_are_cosines_best_first(flat, encoder, pool):
    query = "Japan began the defence of their Asian Cup title ."
    results = flat.retrieve(query, 5)
    q = encoder.encode([query], normalize_embeddings=True)[0]
    for record, score in results:
        assert score == pytest.approx(float(encoder.encode([record.text], normalize_embeddings=True)[0] @ q), abs=1e-5)
    assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)
    texts = [r.text for r in pool]
    brute = np.argsort(-(encoder.encode(texts, normalize_embeddings=True) @ q), kind="stable")[:5]
    assert [r.id for r, _ in results] == [pool[i].id for i in brute]


def test_query_duplicates_are_excluded(flat, pool):
    query = pool[10]
    results = flat.retrieve(query, 10)
    assert all(r.text != query.text and r.id != query.id for r, _ in results)
    assert all(r.text != query.text for r, _ in flat.retrieve(query.text, 10))


def test_hnsw_and_ivf_find_the_same_top1_as_flat(encoder, pool, flat):
    """Easy case: the encoder is uncased, so a lowercased pool sentence embeds exactly like the original
    (cosine 1) without being a textual duplicate; every index must return that original first."""
    from collections import Counter

    counts = Counter(r.text.lower() for r in pool)  # repeated lines ("LONDON 1996-08-30") would tie
    queries = [r.text.lower() for r in pool[::15] if r.text != r.text.lower() and counts[r.text.lower()] == 1]
    assert len(queries) >= 10
    expected = [flat.retrieve(q, 1)[0][0].id for q in queries]
    for index_type in ("hnsw", "ivf"):
        retriever = DenseRetriever(encoder, index_type=index_type, nlist=8, nprobe=2, show_progress=False)
        retriever.index(pool)
        got = [retriever.retrieve(q, 1)[0] for q in queries]
        assert [r.id for r, _ in got] == expected, index_type
        assert all(s == pytest.approx(1.0, abs=1e-4) for _, s in got)


def test_approximate_indexes_agree_with_flat_on_raw_vectors():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for index_type in ("flat", "hnsw", "ivf"):
        index = build_faiss_index(vectors, index_type, nlist=16)
        top1 = [int(search_faiss(index, vectors[i], 1, nprobe=1)[0][0]) for i in range(0, 400, 20)]
        assert top1 == list(range(0, 400, 20)), index_type
    # IVF widens nprobe until it can return as many hits as asked
    ivf = build_faiss_index(vectors, "ivf", nlist=16)
    ids, _ = search_faiss(ivf, vectors[0], 300, nprobe=1)
    assert (ids >= 0).sum() == 300
    with pytest.raises(ValueError, match="index_type"):
        build_faiss_index(vectors, "lsh")


@pytest.mark.parametrize("index_type", ["flat", "ivf"])
def test_task_filter_over_fetches_through_the_index(encoder, pool, index_type):
    mixed = [Record(id=r.id, text=r.text, meta={"task": "re" if i % 25 == 0 else "ner"}) for i, r in enumerate(pool)]
    retriever = DenseRetriever(encoder, index_type=index_type, nlist=8, nprobe=1, show_progress=False)
    retriever.index(mixed)
    results = retriever.retrieve("Germany beat Italy in Rome .", 8, task="re")
    assert len(results) == 8 and all(r.meta["task"] == "re" for r, _ in results)
    n_re = sum(r.meta["task"] == "re" for r in mixed)
    assert len(retriever.retrieve("Germany", 50, task="re")) == n_re  # k beyond the task's share: all of them


@pytest.mark.parametrize("index_type", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip_gives_identical_results(tiny_bert_path, pool, index_type, tmp_path):
    retriever = DenseRetriever(str(tiny_bert_path), index_type=index_type, nlist=8, query_prefix="query: ",
                               passage_prefix="passage: ", show_progress=False)
    retriever.index(pool[:120])
    retriever.save(tmp_path / "dense")
    assert {p.name for p in (tmp_path / "dense").iterdir()} == {"config.json", "records.jsonl", "index.faiss"}
    again = DenseRetriever.load(tmp_path / "dense")
    assert again.config() == retriever.config()
    for query in pool[200:210]:
        assert again.retrieve(query, 5) == retriever.retrieve(query, 5)


def test_retrieve_many_matches_retrieve_and_in_memory_encoders_must_be_passed_to_load(flat, pool, encoder, tmp_path):
    queries = pool[100:106]
    for batched, single in zip(flat.retrieve_many(queries, 4), [flat.retrieve(q, 4) for q in queries], strict=True):
        # batch padding changes embeddings in the last float digits; the tiny random encoder has near ties
        np.testing.assert_allclose([s for _, s in batched], [s for _, s in single], atol=1e-5)
        assert batched[0][0].id == single[0][0].id or abs(single[0][1] - single[1][1]) < 1e-5
    flat.save(tmp_path / "obj")
    with pytest.raises(ValueError, match="model="):
        DenseRetriever.load(tmp_path / "obj")
    again = DenseRetriever.load(tmp_path / "obj", model=encoder)
    assert again.retrieve(queries[0], 4) == flat.retrieve(queries[0], 4)


def test_empty_pool_and_bad_options(encoder):
    retriever = DenseRetriever(encoder, show_progress=False)
    retriever.index([])
    assert retriever.retrieve("x", 3) == [] and retriever.retrieve_many(["x"], 3) == [[]]
    with pytest.raises(ValueError, match="index_type"):
        DenseRetriever(index_type="pq")


@pytest.mark.slow
def test_minilm_neighbours_share_entity_types_more_often_than_random(shared_data):
    """Packaged all-MiniLM-L6-v2 on CoNLL-2003: a dev sentence's dense top-1 train neighbour shares an entity
    type with it far more often than a random train sentence does (measured: 0.87 vs 0.42 on 2,000/200)."""
    pool = load_dataset("conll2003", "train", data_root=shared_data)[:1000]
    queries = [r for r in load_dataset("conll2003", "dev", data_root=shared_data) if r.entities][:100]
    dense = DenseRetriever("minilm", show_progress=False)
    dense.index(pool)
    random = RandomRetriever(seed=0)
    random.index(pool)

    def share_rate(results):
        return np.mean([bool({e.label for e in q.entities} & {e.label for e in res[0][0].entities})
                        for q, res in zip(queries, results, strict=True)])

    dense_rate = share_rate(dense.retrieve_many(queries, 1))
    random_rate = share_rate([random.retrieve(q, 1) for q in queries])
    assert dense_rate > random_rate + 0.2, (dense_rate, random_rate)
    # the neighbours are sensible: a football result finds a football result
    top = dense.retrieve("SOCCER - GERMANY BEAT ITALY 2-1 IN FRIENDLY .", 3)
    assert any("SOCCER" in r.text for r, _ in top), top
