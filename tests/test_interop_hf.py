"""Hugging Face ``datasets`` interop: lossless round trips of every corpus, predictions, foreign datasets, the CLI."""

from __future__ import annotations

import datasets
import pytest
from typer.testing import CliRunner

from openie.cli import app
from openie.datasets import get_dataset, list_datasets, load_dataset
from openie.errors import DataFormatError
from openie.interop.hf import load_hf, records_from_hf, records_to_hf, save_hf, tag_names
from openie.records import Entity, Event, EventArgument, Record, Relation, read_jsonl, write_jsonl

runner = CliRunner()


def dicts(records):
    """Everything a record holds, scores included (``Entity.__eq__`` ignores scores)."""
    return [r.to_dict() for r in records]


def predictions(gold: list[Record]) -> list[Record]:
    """Prediction-like records: raw text, overlapping and out-of-order scored entities, relations, events, meta."""
    out = []
    for i, g in enumerate(gold):
        p = g.without_annotations()
        p.tokens = None
        p.meta = {"line": i, "parse_problems": [{"kind": "syntax", "fragment": "[\"x\""}], "alignment": {"exact": 1}}
        p.entities = [Entity(e.start, e.end, e.label, e.text, 0.5 + j / 100) for j, e in enumerate(g.entities)][::-1]
        if g.entities:
            e = g.entities[0]
            p.entities.append(Entity(e.start, e.start + 1, "initial", e.text[0]))  # overlaps, not token-aligned
            p.relations = [Relation(p.entities[-1], e, "starts", 0.25)]
            p.events = [Event(Entity(e.start, e.end, "Mention", e.text, 0.75),
                              (EventArgument(e.start, e.end, "who", e.text, 0.1),), 0.9)]
        out.append(p)
    return out


@pytest.mark.parametrize("name", list_datasets())
def test_every_corpus_round_trips_losslessly(corpus_slices, tmp_path, name):
    records = corpus_slices(name)
    labels = get_dataset(name).labels
    for layout in ("tokens", "spans"):
        save_hf(records, tmp_path / layout, layout=layout, labels=labels, progress=False)
        assert dicts(load_hf(tmp_path / layout)) == dicts(records), layout
    ds = datasets.load_from_disk(str(tmp_path / "tokens"))
    names = ds.features["ner_tags"].feature.names
    assert names[:len(tag_names(labels))] == tag_names(labels)  # registry order first, as training code expects
    assert ds[0]["tokens"] == records[0].tokens
    assert [names[t] for t in ds[0]["ner_tags"]][:1] != []


def test_a_whole_corpus_with_relations_round_trips(shared_data, tmp_path):
    records = load_dataset("conll04", "train") + load_dataset("conll04", "dev")
    save_hf(records, tmp_path / "conll04", labels=get_dataset("conll04").labels, progress=False)
    back = load_hf(tmp_path / "conll04")
    assert dicts(back) == dicts(records)
    assert sum(len(r.relations) for r in back) > 1000
    ds = datasets.load_from_disk(str(tmp_path / "conll04"))
    assert {"id", "tokens", "ner_tags", "relations", "meta"} <= set(ds.column_names)
    assert "entity_scores" not in ds.column_names and "entity_order" not in ds.column_names


@pytest.mark.parametrize("scheme", ["bio", "iob1", "bilou", "bioes"])
def test_tag_schemes_round_trip(shared_data, scheme):
    records = load_dataset("wnut17", "dev")[:200]
    ds = records_to_hf(records, scheme=scheme)
    assert dicts(records_from_hf(ds)) == dicts(records)  # the scheme is read from the ClassLabel names


def test_predictions_need_the_spans_layout_and_keep_everything(shared_data, tmp_path):
    preds = predictions(load_dataset("conll04", "dev")[:40])
    with pytest.raises(DataFormatError, match=r"conll04-dev-0.*no tokens.*layout 'spans'"):
        records_to_hf(preds)
    save_hf(preds, tmp_path / "preds", layout="spans", progress=False)
    assert dicts(load_hf(tmp_path / "preds")) == dicts(preds)
    assert "entities" in records_to_hf(preds, layout="auto").column_names  # auto falls back to spans


def test_tokens_layout_keeps_scores_and_entity_order(shared_data):
    gold = load_dataset("conll2003", "dev")[:30]
    preds = []
    for g in gold:
        p = g.without_annotations()
        p.entities = [Entity(e.start, e.end, e.label, e.text, 1 / (j + 2)) for j, e in enumerate(g.entities)][::-1]
        preds.append(p)
    ds = records_to_hf(preds, layout="auto")
    assert {"ner_tags", "entity_scores", "entity_order"} <= set(ds.column_names)
    assert dicts(records_from_hf(ds)) == dicts(preds)


def test_records_tags_cannot_hold_are_refused_by_name(shared_data):
    record = load_dataset("conll2003", "dev")[1]
    first = record.entities[0]
    nested = Record(record.id, record.text, tokens=record.tokens,
                    entities=[first, Entity(first.start, first.end, "other", first.text)])
    with pytest.raises(DataFormatError, match=rf"{record.id}.*overlap"):
        records_to_hf([nested])
    inside = Record("r-inside", "Ada Lovelace", tokens=["Ada", "Lovelace"], entities=[Entity(0, 2, "x", "Ad")])
    with pytest.raises(DataFormatError, match=r"r-inside.*token boundaries"):
        records_to_hf([inside])
    assert dicts(records_from_hf(records_to_hf([nested, inside], layout="spans"))) == dicts([nested, inside])
    with pytest.raises(ValueError, match="unknown HF layout"):
        records_to_hf([record], layout="conll")


def test_a_dataset_from_elsewhere_reads(tmp_path):
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({
        "id": datasets.Value("int64"), "tokens": datasets.List(datasets.Value("string")),
        "pos_tags": datasets.List(datasets.Value("string")), "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    train = datasets.Dataset.from_dict({"id": [7], "tokens": [["Ada", "Lovelace", "visits", "Paris"]],
                                        "pos_tags": [["NNP", "NNP", "VBZ", "NNP"]], "ner_tags": [[1, 2, 0, 3]]},
                                       features=features)
    validation = datasets.Dataset.from_dict({"id": [8], "tokens": [["Bob"]], "pos_tags": [["NNP"]],
                                             "ner_tags": [[1]]}, features=features)
    datasets.DatasetDict({"train": train, "validation": validation}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataFormatError, match="splits train, validation"):
        load_hf(tmp_path / "dd")
    [record] = load_hf(tmp_path / "dd", split="train")
    assert record.id == "7" and record.text == "Ada Lovelace visits Paris" and record.lang == "en"
    assert [(e.text, e.label) for e in record.entities] == [("Ada Lovelace", "PER"), ("Paris", "LOC")]
    assert record.meta == {"pos_tags": ["NNP", "NNP", "VBZ", "NNP"]}
    with pytest.raises(DataFormatError, match="no split 'test'"):
        load_hf(tmp_path / "dd", split="test")

    strings = datasets.Dataset.from_dict({"tokens": [["a", "b", "c"]], "tags": [["U-x", "B-y", "L-y"]]})
    [record] = records_from_hf(strings, tags_column="tags", id_prefix="mine")
    assert record.id == "mine-0" and [(e.text, e.label) for e in record.entities] == [("a", "x"), ("b c", "y")]
    ids = datasets.Dataset.from_dict({"tokens": [["a"]], "ner_tags": [[5]]})
    with pytest.raises(DataFormatError, match=r"field 'ner_tags': row 0.*tag 5.*label_names"):
        records_from_hf(ids)
    with pytest.raises(DataFormatError, match="neither an 'entities' column"):
        records_from_hf(datasets.Dataset.from_dict({"sentence": ["x"]}))


def test_cli_converts_each_direction(shared_data, tmp_path):
    out = runner.invoke(app, ["data", "convert", "conll04:dev", str(tmp_path / "hf"), "--to", "hf"])
    assert out.exit_code == 0, out.output
    assert "wrote 231 records" in out.stdout and "(hf)" in out.stdout
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "hf"), str(tmp_path / "back.jsonl")])
    assert out.exit_code == 0, out.output
    assert dicts(read_jsonl(tmp_path / "back.jsonl")) == dicts(load_dataset("conll04", "dev"))
    names = datasets.load_from_disk(str(tmp_path / "hf")).features["ner_tags"].feature.names
    assert names == tag_names(get_dataset("conll04").labels)

    write_jsonl(predictions(load_dataset("conll04", "dev")[:10]), tmp_path / "pred.jsonl")
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "pred.jsonl"), str(tmp_path / "p"), "--to", "hf"])
    assert out.exit_code == 2 and "conll04-dev-0" in out.output and "layout 'spans'" in out.output
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "pred.jsonl"), str(tmp_path / "p"), "--to", "hf",
                              "--layout", "spans"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "p"), str(tmp_path / "p.jsonl"), "--from", "hf"])
    assert out.exit_code == 0, out.output
    assert dicts(read_jsonl(tmp_path / "p.jsonl")) == dicts(read_jsonl(tmp_path / "pred.jsonl"))
    out = runner.invoke(app, ["data", "convert", "conll04:dev", str(tmp_path / "x"), "--to", "parquet"])
    assert out.exit_code == 2 and "unknown output format 'parquet'" in out.output
