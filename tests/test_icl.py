from __future__ import annotations

import re

import pytest

from openie.engines.scripted import ScriptedEngine
from openie.methods.icl import InContextExtractor
from openie.records import Entity, Record
from openie.schema import Schema
from prompts import PromptBuilder

SCHEMA = Schema.from_labels(["person", "location"])


def _answer_names(request) -> str:
    """A scripted 'model' that tags every capitalised word after the query's Input line."""
    query = request.prompt.rsplit('Input: "', 1)[1].rsplit('"', 1)[0]
    names = [w for w in query.split() if w[:1].isupper()]
    return "; ".join(f"person: {n}" for n in names) or "None"


def test_zero_and_few_shot_extraction_grounds_predictions():
    records = [Record("a", "Ada met Charles in town ."), Record("b", "nobody here ."), Record("c", "Bob !")]
    engine = ScriptedEngine(_answer_names)
    demos = [Record("d", "Alan lived in Wilmslow .", entities=[Entity(0, 4, "person", "Alan")])]
    ex = InContextExtractor(engine, PromptBuilder("ner.ruie.v1", SCHEMA), demonstrations=lambda r: demos,
                            adapter="ner-en", batch_size=2, show_progress=False)
    preds = list(ex.extract(records))
    assert [p.id for p in preds] == ["a", "b", "c"]
    assert [e.text for e in preds[0].entities] == ["Ada", "Charles"] and not preds[1].entities
    assert all(r.adapter == "ner-en" and r.stop == ("\n",) and r.template.startswith("ner.ruie.v1@") for r in engine.calls)
    assert "Alan lived in Wilmslow" in engine.calls[0].prompt
    assert ex.stats.records == 3 and ex.stats.entities == 3 and ex.stats.prompts == 3


def test_json_format_requests_carry_the_json_schema_unless_unconstrained():
    engine = ScriptedEngine(lambda r: '{"entities": [{"text": "Ada", "type": "person"}]}')
    ex = InContextExtractor(engine, PromptBuilder("ner.json.v1", SCHEMA), show_progress=False)
    [pred] = ex.extract([Record("a", "Ada met Charles .")])
    assert pred.entities == [Entity(0, 3, "person", "Ada")]
    assert engine.calls[0].json_schema["properties"]["entities"]["items"]["properties"]["type"]["enum"] == ["person", "location"]
    ex2 = InContextExtractor(engine, PromptBuilder("ner.json.v1", SCHEMA), constrained=False, show_progress=False)
    list(ex2.extract([Record("a", "Ada met Charles .")]))
    assert engine.calls[-1].json_schema is None


def test_long_records_are_chunked_and_merged_to_global_offsets():
    words = [f"Name{i}" if i % 9 == 0 else "w" for i in range(300)]
    text = " ".join(words)
    engine = ScriptedEngine(_answer_names)
    ex = InContextExtractor(engine, PromptBuilder("ner.ruie.v1", SCHEMA), chunk_tokens=60,
                            chunk_overlap_tokens=10, show_progress=False)
    [pred] = ex.extract([Record("long", text)])
    want = [(m.start(), m.end()) for m in re.finditer(r"Name\d+", text)]
    assert [(e.start, e.end) for e in pred.entities] == want
    assert pred.meta["chunks"] == len(engine.calls) > 1 and ex.stats.chunked_records == 1
    assert pred.check_offsets() == []


@pytest.mark.slow
def test_zero_shot_gemma_on_conll2003_dev_in_every_format(shared_data):
    """Gemma-3-270M (base) through the vLLM engine on 24 CoNLL-2003 dev sentences, each format (dtype auto:
    float32 where bfloat16 would be emulated)."""
    from openie.datasets import dataset_schema, load_dataset
    from openie.engines import vllm_available
    from openie.metrics import entity_scores
    from openie.models import resolve_model

    if not vllm_available():
        pytest.skip("vLLM is not installed")
    from openie.engines.vllm_offline import VLLMEngine

    gold = load_dataset("conll2003", "dev")[:24]
    schema = dataset_schema("conll2003")
    engine = VLLMEngine(resolve_model("gemma-3-270m"), dtype="auto", max_model_len=2048, cpu_threads=2)
    try:
        for template in ("ner.ruie.v1", "ner.json.v1", "ner.question.v1"):
            ex = InContextExtractor(engine, PromptBuilder(template, schema), max_tokens=96, batch_size=24,
                                    show_progress=False)
            preds = list(ex.extract(gold))
            scores = entity_scores(gold, preds)
            print(f"{template}: strict F1 {scores.f1:.3f} (P {scores.precision:.3f} R {scores.recall:.3f}), "
                  f"{ex.stats.prompts} prompts, {ex.stats.parse_problems} parse problems, "
                  f"{ex.stats.not_found} spans not in the input, {ex.stats.entities} entities")
            assert len(preds) == 24 and ex.stats.prompts == (96 if template.startswith("ner.question") else 24)
            assert 0.0 <= scores.f1 <= 1.0 and all(p.check_offsets() == [] for p in preds)
    finally:
        engine.close()


def test_a_router_sends_each_record_of_a_mixed_batch_to_its_adapter():
    from openie.methods.routing import AdapterRouter
    from retrievers.bm25 import BM25Retriever

    pool = [Record("e1", "the river flows through London", lang="en"), Record("e2", "the company is in Paris", lang="en"),
            Record("d1", "der Fluss fliesst durch Berlin", lang="de"), Record("d2", "die Firma ist in Berlin", lang="de")]
    router = AdapterRouter.build(pool, {"en": "ner-en", "de": "ner-de"}, retriever=BM25Retriever(show_progress=False),
                                 k=2)
    batches: list[list[str | None]] = []

    class Recording(ScriptedEngine):
        def generate(self, requests):
            batches.append([r.adapter for r in requests])
            return super().generate(requests)

    engine = Recording(_answer_names)
    ex = InContextExtractor(engine, PromptBuilder("ner.ruie.v1", SCHEMA), adapter="ignored", router=router,
                            batch_size=4, show_progress=False)
    records = [Record("q1", "Anna wohnt in Berlin und die Firma auch"), Record("q2", "the river and the company"),
               Record("q3", "der Fluss ist gross")]
    preds = ex.extract_batch(records)
    assert batches == [["ner-de", "ner-en", "ner-de"]]  # one engine call, one adapter per request
    assert [p.meta["adapter"] for p in preds] == ["ner-de", "ner-en", "ner-de"]
