"""BRAT standoff interop: lossless round trips of every corpus and of predictions, folders from brat, the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from openie.cli import app
from openie.datasets import list_datasets, load_dataset
from openie.errors import DataFormatError
from openie.interop.brat import SIDE_FILE, read_brat, write_brat
from openie.readers import write_conll
from openie.records import Entity, Event, EventArgument, Record, Relation, read_jsonl, write_jsonl

runner = CliRunner()


def dicts(records):
    """Everything a record holds, scores included (``Entity.__eq__`` ignores scores)."""
    return [r.to_dict() for r in records]


def predictions() -> list[Record]:
    """Multi-line documents: an entity across a line break, \\r\\n and U+2028 in the text, scored annotations."""
    text = "Ada Lovelace\r\nmet Charles\nBabbage in London.\u2028Then she wrote."

    def at(part: str, label: str, score: float | None = None) -> Entity:
        start = text.index(part)
        return Entity(start, start + len(part), label, part, score)

    def arg(part: str, role: str, score: float | None = None) -> EventArgument:
        e = at(part, role)
        return EventArgument(e.start, e.end, role, part, score)

    ada, charles = at("Ada Lovelace", "person", 0.9), at("Charles\nBabbage", "person")
    london = at("London", "location", 0.5)
    doc = Record("doc/1", text, entities=[charles, ada, london, at("Ada", "person", 0.1)],
                 relations=[Relation(ada, charles, "met", 0.8), Relation(at("London", "location"), ada, "hosts")],
                 events=[Event(at("met", "Meeting", 0.6), (arg("Ada Lovelace", "Participant", 0.7),
                                                         arg("Charles\nBabbage", "Participant"), arg("London", "Place"),
                                                         arg("she", "Who")), 0.3)],
                 tokens=["Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London", ".", "Then", "she",
                         "wrote", "."],
                 meta={"source": "notes", "nested": [1, {"x": None}]}, lang="de")
    empty = Record("doc/1", "Nothing here.", meta={"line": 3})  # the same id: the file name must differ
    return [doc, empty]


@pytest.mark.parametrize("name", list_datasets())
def test_every_corpus_round_trips_losslessly(corpus_slices, tmp_path, name):
    records = corpus_slices(name)
    assert write_brat(records, tmp_path / "brat") == len(records)
    assert dicts(read_brat(tmp_path / "brat")) == dicts(records)


def test_a_whole_corpus_with_relations_round_trips(shared_data, tmp_path):
    records = load_dataset("conll04", "train") + load_dataset("conll04", "dev")
    write_brat(records, tmp_path / "conll04")
    back = read_brat(tmp_path / "conll04")
    assert dicts(back) == dicts(records)
    assert sum(len(r.relations) for r in back) > 1000
    ann = (tmp_path / "conll04" / "conll04-dev-0.ann").read_text()
    assert ann.startswith("T1\t") and "\nR1\t" in ann and " Arg1:T" in ann


def test_predictions_round_trip(tmp_path):
    records = predictions()
    write_brat(records, tmp_path / "pred")
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == [
        "doc_1-2.ann", "doc_1-2.txt", "doc_1.ann", "doc_1.txt", SIDE_FILE]
    assert dicts(read_brat(tmp_path / "pred")) == dicts(records)
    ann = (tmp_path / "pred" / "doc_1.ann").read_text(encoding="utf-8").splitlines()
    assert ann[0] == "T1\tperson 18 25;26 33\tCharles Babbage"  # brat's own form of a span across a line break
    assert (tmp_path / "pred" / "doc_1.txt").read_bytes().count(b"\r\n") == 1


def test_edits_made_in_brat_are_read(tmp_path):
    write_brat(predictions(), tmp_path / "pred")
    ann = tmp_path / "pred" / "doc_1.ann"
    ann.write_text(ann.read_text(encoding="utf-8") + "T99\tcity 37 43\tLondon\n#1\tAnnotatorNotes T99\tcheck\n",
                   encoding="utf-8")
    doc = read_brat(tmp_path / "pred")[0]
    assert doc.entities[-1] == Entity(37, 43, "city", "London")
    assert doc.meta["brat_lines"] == ["#1\tAnnotatorNotes T99\tcheck"]


def test_a_folder_from_brat_reads(tmp_path):
    folder = tmp_path / "collection"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("Bob hired Ann.\n", encoding="utf-8")
    (folder / "b.ann").write_text("T1\tPerson 0 3\tBob\nT2\tPerson 10 13\tAnn\nT3\tHire 4 9\thired\n"
                                  "E1\tHire:T3 Employer:T1 Employee:T2\nR1\tKnows Arg1:T1 Arg2:T2\n"
                                  "A1\tNegated E1\n", encoding="utf-8")
    (folder / "sub" / "a.txt").write_text("Paris", encoding="utf-8")
    (folder / "sub" / "a.ann").write_text("", encoding="utf-8")
    b, a = read_brat(folder, lang="fr")
    assert (a.id, a.text, a.entities, a.lang) == ("sub/a", "Paris", [], "fr")
    assert b.id == "b" and [e.text for e in b.entities] == ["Bob", "Ann"]  # the trigger is not an entity
    assert [(r.head.text, r.tail.text, r.label) for r in b.relations] == [("Bob", "Ann", "Knows")]
    [event] = b.events
    assert event.type == "Hire" and [(x.role, x.text) for x in event.arguments] == [("Employer", "Bob"),
                                                                                   ("Employee", "Ann")]
    assert b.meta == {"brat_lines": ["A1\tNegated E1"]} and b.tokens is None


@pytest.mark.parametrize(("ann", "message"), [
    ("T1\tPerson 0 3;8 11\tBob Ann", r"b.ann, line 1: discontinuous span"),
    ("T1\tPerson 0 3\tBen", r"b.ann, line 1: span text 'Ben' differs"),
    ("T1\tPerson 0 99\tBob", r"b.ann, line 1: bad text-bound offsets"),
    ("T1\tPerson 0 3\tBob\nR1\tKnows Arg1:T1 Arg2:T7", r"b.ann, line 2: 'T7' is not a text-bound"),
    ("T1\tPerson 0 3\tBob\nT1\tPerson 0 3\tBob", r"b.ann, line 2: annotation id 'T1' is used twice"),
])
def test_malformed_brat_names_file_and_line(tmp_path, ann, message):
    (tmp_path / "b.txt").write_text("Bob met Ann", encoding="utf-8")
    (tmp_path / "b.ann").write_text(ann + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        read_brat(tmp_path)


def test_what_brat_cannot_write_is_refused(tmp_path):
    with pytest.raises(DataFormatError, match=r"record 'r1'.*label 'two words'"):
        write_brat([Record("r1", "a b", entities=[Entity(0, 3, "two words", "a b")])], tmp_path / "x")
    with pytest.raises(DataFormatError, match=r"record 'r2'.*empty"):
        write_brat([Record("r2", "a\nb", entities=[Entity(1, 2, "x", "\n")])], tmp_path / "y")
    write_brat([Record("ok", "a")], tmp_path / "z")
    with pytest.raises(FileExistsError, match="already holds brat files"):
        write_brat([Record("ok", "a")], tmp_path / "z")
    (tmp_path / "lonely").mkdir()
    (tmp_path / "lonely" / "c.ann").write_text("")
    with pytest.raises(FileNotFoundError, match=r"c.txt does not exist"):
        read_brat(tmp_path / "lonely")


def test_cli_converts_each_direction(shared_data, tmp_path):
    out = runner.invoke(app, ["data", "convert", "conll04:dev", str(tmp_path / "brat"), "--to", "brat"])
    assert out.exit_code == 0, out.output
    assert "wrote 231 records" in out.stdout and "(brat)" in out.stdout
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "brat"), str(tmp_path / "dev.conll")])
    assert out.exit_code == 0, out.output  # brat -> CoNLL works because the side file kept the tokens
    write_conll(load_dataset("conll04", "dev"), tmp_path / "direct.conll")
    assert (tmp_path / "dev.conll").read_text() == (tmp_path / "direct.conll").read_text()
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "brat"), str(tmp_path / "dev.jsonl"),
                              "--from", "brat"])
    assert out.exit_code == 0, out.output
    assert dicts(read_jsonl(tmp_path / "dev.jsonl")) == dicts(load_dataset("conll04", "dev"))

    write_jsonl(predictions(), tmp_path / "pred.jsonl")
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "pred.jsonl"), str(tmp_path / "p"), "--to", "brat"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "p"), str(tmp_path / "p.jsonl")])
    assert out.exit_code == 0, out.output
    assert dicts(read_jsonl(tmp_path / "p.jsonl")) == dicts(predictions())
    out = runner.invoke(app, ["data", "convert", str(tmp_path / "pred.jsonl"), str(tmp_path / "p"), "--to", "brat"])
    assert out.exit_code == 2 and "already holds brat files" in out.output
