"""BM25: the documented tokenizer, rank-bm25 and bm25s giving one Okapi ranking, the retrieval rules, save/load."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from openie.datasets import load_dataset
from openie.records import Record
from retrievers import BM25Retriever, word_tokenize
from retrievers.bm25 import okapi_idf


@pytest.fixture(scope="module")
def conll(shared_data):
    """A real pool (2,000 CoNLL-2003 train sentences) and 60 dev queries."""
    pool = load_dataset("conll2003", "train", data_root=shared_data)[:2000]
    queries = load_dataset("conll2003", "dev", data_root=shared_data)[:60]
    return pool, queries


@pytest.fixture(scope="module")
def indexed(conll):
    pool, _ = conll
    out = {}
    for backend in ("rank_bm25", "bm25s"):
        out[backend] = BM25Retriever(backend, show_progress=False)
        out[backend].index(pool)
    return out


def _rec(i: int, text: str, task: str | None = None) -> Record:
    return Record(id=f"r{i}", text=text, meta={"task": task} if task else {})


def test_tokenizer_is_lowercase_unicode_word_tokens():
    assert word_tokenize("U.S. Open-2024, in Zürich!") == ["u", "s", "open", "2024", "in", "zürich"]
    assert word_tokenize("Москва и Berlin") == ["москва", "и", "berlin"]
    assert BM25Retriever(lowercase=False).tokenize("Paris x") == ["Paris", "x"]
    with pytest.raises(ValueError, match="backend"):
        BM25Retriever("lucene")


def test_backends_give_identical_top_k_and_scores_on_a_real_corpus(conll, indexed):
    _, queries = conll
    for query in queries:
        ref, fast = indexed["rank_bm25"].scores(query), indexed["bm25s"].scores(query)
        np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-9)
        top_ref = indexed["rank_bm25"].retrieve(query, 10)
        top_fast = indexed["bm25s"].retrieve(query, 10)
        assert [r.id for r, _ in top_fast] == [r.id for r, _ in top_ref]
        np.testing.assert_allclose([s for _, s in top_fast], [s for _, s in top_ref], rtol=1e-9)
    # the reference really is rank_bm25's BM25Okapi with its defaults (k1=1.5, b=0.75, epsilon=0.25)
    model = indexed["rank_bm25"]._model
    assert (model.k1, model.b, model.epsilon) == (1.5, 0.75, 0.25)


def test_frequent_terms_get_okapis_epsilon_idf_floor_in_both_backends():
    """Terms in more than half the documents have a negative Okapi idf, floored to epsilon * mean idf.

    bm25s's own variants differ exactly here (Lucene idf is always positive; "robertson" clamps to 0),
    so the bm25s backend must reproduce the floor itself.
    """
    texts = ["the cat sat on the mat", "the dog ate the bone", "the bird sang", "a cat and a dog",
             "the sun rose over the hills", "rain fell on the town"]
    pool = [_rec(i, t) for i, t in enumerate(texts)]
    corpus = [word_tokenize(t) for t in texts]
    for k1, b in ((1.5, 0.75), (1.2, 0.4)):
        reference = BM25Okapi(corpus, k1=k1, b=b, epsilon=0.25)
        assert reference.idf["the"] == pytest.approx(0.25 * reference.average_idf)  # the floor is in play
        for backend in ("rank_bm25", "bm25s"):
            retriever = BM25Retriever(backend, k1=k1, b=b, show_progress=False)
            retriever.index(pool)
            for query in ("the cat", "the the dog", "hills and rain", "unknown words only"):
                np.testing.assert_allclose(retriever.scores(query), reference.get_scores(word_tokenize(query)),
                                           rtol=1e-12, atol=1e-12)
    df = np.array([5, 1, 3])
    assert okapi_idf(df, 6, 0.25)[1] == pytest.approx(np.log(5.5 / 1.5))


def test_bm25s_default_variant_would_not_match_okapi():
    """Why the backend reconfigures bm25s: its default (Lucene) scores rank differently in general."""
    import bm25s

    corpus = [word_tokenize(t) for t in ["the cat", "the cat the cat the cat", "dog"]]
    default = bm25s.BM25()
    default.index(corpus, show_progress=False)
    okapi = BM25Okapi(corpus).get_scores(["the", "cat"])
    assert not np.allclose(default.get_scores(["the", "cat"]), okapi)


def test_query_duplicates_are_never_retrieved(conll, indexed):
    pool, _ = conll
    query = pool[7]
    for retriever in indexed.values():
        ids = [r.id for r, _ in retriever.retrieve(query, 20)]
        assert query.id not in ids
        assert all(duplicate.text != query.text for duplicate, _ in retriever.retrieve(query.text, 20))
        # a formatted query string: the raw sentence named by exclude_text is dropped as well
        formatted = f"Input: {query.text}"
        assert query.text not in [r.text for r, _ in retriever.retrieve(formatted, 20, exclude_text=query.text)]


def test_exact_duplicate_in_pool_is_excluded_but_near_duplicate_is_not():
    pool = [_rec(0, "Berlin hosts the summit"), _rec(1, "Berlin  hosts the summit "), _rec(2, "Berlin hosts a summit"),
            _rec(3, "Rome is old")]
    for backend in ("rank_bm25", "bm25s"):
        retriever = BM25Retriever(backend, show_progress=False)
        retriever.index(pool)
        assert [r.id for r, _ in retriever.retrieve("Berlin hosts the summit", 4)] == ["r2", "r3"]


def test_task_filter(conll):
    pool, queries = conll
    mixed = [Record(id=r.id, text=r.text, meta={"task": "ner" if i % 3 else "re"}) for i, r in enumerate(pool[:300])]
    for backend in ("rank_bm25", "bm25s"):
        retriever = BM25Retriever(backend, show_progress=False)
        retriever.index(mixed)
        results = retriever.retrieve(queries[0], 8, task="re")
        assert len(results) == 8 and all(r.meta["task"] == "re" for r, _ in results)
        tagged_query = Record(id="q", text=queries[0].text, meta={"task": "re"})
        assert retriever.retrieve(tagged_query, 8) == results  # the query's own task is the default
        everything = retriever.retrieve(queries[0], 8)
        assert {r.meta["task"] for r, _ in everything} == {"ner", "re"}


@pytest.mark.parametrize("backend", ["rank_bm25", "bm25s"])
def test_save_load_round_trip_gives_identical_results(conll, indexed, backend, tmp_path):
    _, queries = conll
    retriever = indexed[backend]
    retriever.save(tmp_path / "index")
    again = BM25Retriever.load(tmp_path / "index")
    assert again.config() == retriever.config()
    for query in queries[:15]:
        assert again.retrieve(query, 10) == retriever.retrieve(query, 10)


def test_edge_cases():
    retriever = BM25Retriever("bm25s", show_progress=False)
    retriever.index([])
    assert retriever.retrieve("anything", 5) == []
    retriever.index([_rec(0, "one two"), _rec(1, "three")])
    assert [r.id for r, _ in retriever.retrieve("two", 10)] == ["r0", "r1"]  # k beyond the pool: all, best first
    assert len(retriever.retrieve("", 1)) == 1  # no query tokens: all scores 0, pool order
    assert retriever.retrieve("two", 0) == []
