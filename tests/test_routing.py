"""AdapterRouter: majority attribute of the nearest labelled examples, with a confidence floor."""

from __future__ import annotations

import pytest

from openie.methods.routing import AdapterRouter, RouteDecision, RoutingError, routing_accuracy
from openie.records import Record

EN = ["the river flows through the city", "the company was founded in april", "she received the prize in physics",
      "the committee met to discuss the budget"]
XX = ["12 34 56 78 90", "98 76 54 32 10", "11 22 33 44 55", "66 77 88 99 00"]


def _pool():
    return ([Record(f"en{i}", t, lang="en", meta={"domain": "news"}) for i, t in enumerate(EN)]
            + [Record(f"xx{i}", t, lang="xx", meta={"domain": "numbers"}) for i, t in enumerate(XX)])


def bm25():
    from retrievers.bm25 import BM25Retriever

    return BM25Retriever(show_progress=False)


@pytest.fixture(scope="module")
def router():
    return AdapterRouter.build(_pool(), {"en": "ner-en", "xx": "ner-xx"}, retriever=bm25(), k=3)


def test_router_picks_the_adapter_of_the_majority_language(router):
    queries = [Record("q1", "the river flows past the company"), Record("q2", "12 34 99 00 55")]
    decisions = router.route(queries)
    assert [d.adapter for d in decisions] == ["ner-en", "ner-xx"]
    assert all(d.confidence > 0.5 and not d.fallback for d in decisions)
    assert routing_accuracy(decisions, ["en", "xx"]) == 1.0
    assert router(queries[1]) == "ner-xx"


def test_any_attribute_routes_and_low_confidence_falls_back(tiny_bert_path):
    by_domain = AdapterRouter.build(_pool(), {"news": "ner-news", "numbers": "ner-num"}, retriever=bm25(),
                                    attribute="domain", k=3)
    assert by_domain.route(["12 22 77 98"])[0].adapter == "ner-num"
    dense = AdapterRouter.build(_pool(), {"en": "ner-en", "xx": "ner-xx"}, encoder=str(tiny_bert_path), k=3)
    assert dense.route(["12 34 56"])[0].adapter in {"ner-en", "ner-xx"}  # a real faiss index on the tiny BERT
    strict = AdapterRouter.build(_pool(), {"en": "ner-en", "xx": "ner-xx"}, retriever=bm25(), k=8,
                                 min_confidence=0.9, fallback="shared")
    d = strict.route(["the river 12 34 56"])[0]  # all eight neighbours vote: a split vote
    assert d.fallback and d.adapter == "shared" and d.value is None and d.confidence < 0.9


def test_decisions_follow_the_votes():
    class Fixed:
        def __init__(self, results):
            self.results = results

        def retrieve(self, query, k):
            return self.results[:k]

    pool = _pool()
    r = AdapterRouter(Fixed([(pool[4], 0.9), (pool[0], 0.2), (pool[1], 0.2)]), {"en": "a", "xx": "b"}, k=3)
    assert r.route(["q"])[0] == RouteDecision("a", "en", pytest.approx(2 / 3), {"en": 0.6667, "xx": 0.3333})
    weighted = AdapterRouter(Fixed([(pool[4], 0.9), (pool[0], 0.2), (pool[1], 0.2)]), {"en": "a", "xx": "b"}, k=3,
                             weighted=True)
    assert weighted.route(["q"])[0].adapter == "b"
    unknown = AdapterRouter(Fixed([(pool[4], 1.0)]), {"en": "a"}, k=1, fallback=None)
    assert unknown.route(["q"])[0] == RouteDecision(None, None, 1.0, {"xx": 1.0}, True)


def test_bad_routers_are_refused(tiny_bert_path):
    with pytest.raises(RoutingError, match="no adapter and there is no fallback"):
        AdapterRouter.build(_pool(), {"en": "a"}, encoder=str(tiny_bert_path))
    with pytest.raises(RoutingError, match="no pool record carries the attribute 'topic'"):
        AdapterRouter.build(_pool(), {"en": "a"}, encoder=str(tiny_bert_path), attribute="topic")
    with pytest.raises(RoutingError, match="k must be"):
        AdapterRouter(None, {}, k=0)
