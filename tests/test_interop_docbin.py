"""spaCy DocBin interop: lossless round trips of every corpus, predictions in displaCy and spaCy's scorer, the CLI."""

from __future__ import annotations

import pytest
import spacy
from spacy import displacy
from spacy.scorer import Scorer
from spacy.tokens import DocBin
from spacy.training import Example
from typer.testing import CliRunner

from openie.cli import app
from openie.datasets import list_datasets, load_dataset
from openie.errors import DataFormatError
from openie.interop.docbin import read_docbin, records_from_docs, records_to_docs, write_docbin
from openie.metrics import entity_scores
from openie.records import Entity, Event, EventArgument, Record, Relation, read_jsonl, write_jsonl

runner = CliRunner()


def dicts(records):
    """Everything a record holds, scores included (``Entity.__eq__`` ignores scores)."""
    return [r.to_dict() for r in records]


def predictions(gold: list[Record], *, overlaps: bool = True) -> list[Record]:
    """Prediction-like records on raw text: some gold entities dropped, one relabelled copy, scores, meta."""
    out = []
    for i, g in enumerate(gold):
        p = g.without_annotations()
        p.tokens = None
        p.meta = {"line": i, "parse_problems": [{"kind": "not_found", "fragment": "x"}], "lm_calls": 1}
        p.entities = [Entity(e.start, e.end, e.label, e.text, 0.5 + j / 100)
                      for j, e in enumerate(g.entities) if (i + j) % 3]
        if overlaps and g.entities:
            e = g.entities[0]
            p.entities.append(Entity(e.start, e.end, "person" if e.label == "other" else "other", e.text, 0.4))
            p.relations = [Relation(p.entities[-1], e, "same_span", 0.25)]
        out.append(p)
    return out


def odd_record() -> Record:
    """Raw text with runs of whitespace, a tab and a newline, nested entities and one inside a word."""
    text = "  Ada  Lovelace\tmet\nBob's friend in U.S.-based Acme  "
    ents = [Entity(2, 15, "person", "Ada  Lovelace"), Entity(7, 15, "person", "Lovelace", 0.3),
            Entity(20, 23, "person", "Bob"), Entity(20, 25, "person", "Bob's"), Entity(36, 40, "location", "U.S."),
            Entity(36, 51, "organization", "U.S.-based Acme", 0.9)]
    return Record("odd-1", text, entities=ents,
                  relations=[Relation(ents[0], ents[2], "meets", 0.7)],
                  events=[Event(Entity(16, 19, "Meet", "met", 0.2), (EventArgument(2, 15, "a", ents[0].text),))],
                  meta={"nested": [1, [2, {"x": None}]], "f": 1.5})


@pytest.mark.parametrize("name", list_datasets())
def test_every_corpus_round_trips_losslessly(corpus_slices, tmp_path, name):
    records = corpus_slices(name)
    assert write_docbin(records, tmp_path / "gold.spacy") == len(records)
    assert dicts(read_docbin(tmp_path / "gold.spacy")) == dicts(records)
    docs = list(DocBin().from_disk(tmp_path / "gold.spacy").get_docs(spacy.blank("xx").vocab))
    for doc, record in zip(docs, records, strict=True):
        assert [t.text for t in doc] == record.tokens  # the corpus's own tokens, so spacy train sees them
        assert [(e.start_char, e.end_char, e.label_) for e in doc.ents] == [(e.start, e.end, e.label)
                                                                            for e in record.entities]


def test_a_whole_corpus_round_trips(shared_data, tmp_path):
    records = load_dataset("crossner_ai", "train") + load_dataset("crossner_ai", "dev")
    write_docbin(records, tmp_path / "crossner_ai.spacy")
    assert dicts(read_docbin(tmp_path / "crossner_ai.spacy")) == dicts(records)


def test_predictions_round_trip_and_open_in_displacy(shared_data, tmp_path):
    inside = Record("tokens-1", "U.S.-based  firms", tokens=["U.S.-based", "firms"],
                    entities=[Entity(0, 4, "location", "U.S.", 0.5)])  # an entity inside a token, two spaces
    preds = predictions(load_dataset("conll04", "dev")[:40]) + [inside, odd_record()]
    write_docbin(preds, tmp_path / "pred.spacy")
    assert dicts(read_docbin(tmp_path / "pred.spacy")) == dicts(preds)
    docs = list(DocBin().from_disk(tmp_path / "pred.spacy").get_docs(spacy.blank("en").vocab))
    odd = docs[-1]
    assert odd.text == odd_record().text and not odd.ents  # nested entities: the span group holds them
    assert odd.spans["openie"].attrs["scores"][1] == 0.3
    html = displacy.render(odd, style="span", options={"spans_key": "openie"})
    assert all(label in html for label in ("person", "location", "organization")) and "Lovelace" in html
    clean = records_to_docs(predictions(load_dataset("conll04", "dev")[:5], overlaps=False))
    html = displacy.render(clean, style="ent")
    assert all(e.label_ in html for doc in clean for e in doc.ents) and any(doc.ents for doc in clean)


def test_spacy_scorer_agrees_with_openie_metrics(shared_data):
    gold = load_dataset("conll04", "dev")[:60]
    for overlaps in (False, True):
        preds = predictions(gold, overlaps=overlaps)  # raw text: spaCy tokenizes it, unlike the gold
        examples = [Example(p, g) for p, g in zip(records_to_docs(preds), records_to_docs(gold), strict=True)]
        ours = entity_scores(gold, preds).micro
        spans = Scorer.score_spans(examples, "openie", getter=lambda doc, key: doc.spans[key], allow_overlap=True)
        assert (spans["openie_p"], spans["openie_r"]) == pytest.approx((ours.precision, ours.recall))
        if not overlaps:
            ents = Scorer.score_spans(examples, "ents")
            assert (ents["ents_p"], ents["ents_r"]) == pytest.approx((ours.precision, ours.recall))


def test_docs_from_elsewhere_read_from_their_ents(tmp_path):
    nlp = spacy.blank("en")
    doc = nlp("Ada  Lovelace visits Paris.")
    doc.ents = [doc.char_span(0, 13, label="PER"), doc.char_span(21, 26, label="LOC")]
    DocBin(docs=[doc]).to_disk(tmp_path / "theirs.spacy")
    [record] = read_docbin(tmp_path / "theirs.spacy", lang="de")
    assert record.id == "theirs-0" and record.lang == "de" and record.text == doc.text
    assert [(e.text, e.label) for e in record.entities] == [("Ada  Lovelace", "PER"), ("Paris", "LOC")]
    assert record.tokens == ["Ada", "Lovelace", "visits", "Paris", "."]
    assert records_from_docs([doc], id_prefix="x")[0].id == "x-0"


def test_what_no_span_can_hold_is_refused_by_name(tmp_path):
    with pytest.raises(DataFormatError, match=r"'empty'.*empty or only whitespace"):
        records_to_docs([Record("empty", "a b", entities=[Entity(1, 1, "x", "")])])
    with pytest.raises(DataFormatError, match=r"'bad'.*'b' in the text but 'c'"):
        records_to_docs([Record("bad", "a b", entities=[Entity(2, 3, "x", "c")])])
    (tmp_path / "junk.spacy").write_bytes(b"not a docbin")
    with pytest.raises(DataFormatError, match="junk.spacy.*not a spaCy DocBin"):
        read_docbin(tmp_path / "junk.spacy")


def test_cli_converts_each_direction(shared_data, tmp_path):
    out = runner.invoke(app, ["data", "convert", "conll04:dev", str(tmp_path / "dev.spacy")])
    assert out.exit_code == 0, out.output
    assert "wrote 231 records" in out.stdout and "(docbin)" in out.stdout
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "dev.spacy"), str(tmp_path / "dev.jsonl")])
    assert out.exit_code == 0, out.output
    assert dicts(read_jsonl(tmp_path / "dev.jsonl")) == dicts(load_dataset("conll04", "dev"))

    write_jsonl(predictions(load_dataset("conll04", "dev")[:20]), tmp_path / "pred.jsonl")
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "pred.jsonl"), str(tmp_path / "pred.bin"),
                              "--to", "docbin"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "pred.bin"), str(tmp_path / "back.jsonl"),
                              "--from", "docbin"])
    assert out.exit_code == 0, out.output
    assert dicts(read_jsonl(tmp_path / "back.jsonl")) == dicts(read_jsonl(tmp_path / "pred.jsonl"))
