"""CoNLL and SpERT readers/writers: real corpora round-trip, bad input names file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openie.datasets import get_dataset, list_datasets, split_path
from openie.errors import DataFormatError
from openie.readers import (
    ReadReport,
    conll_counts,
    iter_conll,
    read_conll,
    read_conll04,
    read_records,
    write_conll,
)
from openie.records import Entity, Record, write_jsonl

CONLL_SPLITS = [(name, split) for name in list_datasets() if get_dataset(name).format == "conll"
                for split in get_dataset(name).splits]


def original_sentences(path: Path) -> list[list[tuple[str, str]]]:
    """An independent, naive reading of a corpus file: (token, tag) pairs per sentence."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        fields = line.split("\t") if "\t" in line else line.split(" ")
        current.append((fields[0], fields[-1]))
    if current:
        sentences.append(current)
    return sentences


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# --- real corpora ------------------------------------------------------------------------------

def test_conll2003_counts(shared_data):
    reports = {split: conll_counts(shared_data / "conll2003" / f"{split}.txt") for split in ("train", "dev", "test")}
    assert {split: r.sentences for split, r in reports.items()} == {"train": 14041, "dev": 3250, "test": 3453}
    assert reports["train"].tokens == 203621 and reports["train"].documents == 0


@pytest.mark.parametrize("name, split", CONLL_SPLITS)
def test_conll_write_read_reproduces_tokens_and_tags(shared_data, tmp_path, name, split):
    spec = get_dataset(name)
    source = split_path(name, split, data_root=shared_data)
    records = read_conll(source, scheme=spec.scheme, id_prefix=name, lang=spec.lang)
    for record in records:
        assert not record.check_offsets()
    written = tmp_path / "out.conll"
    assert write_conll(records, written, scheme=spec.scheme) == len(records)
    # Tokens and tags line by line equal the released file's (its other columns are not written).
    assert original_sentences(written) == original_sentences(source)


def test_conll04_relations_link_the_right_entities(shared_data):
    first = read_conll04(shared_data / "conll04" / "train.json")[0]
    assert first.meta == {"orig_id": 3255}
    assert [e.text for e in first.entities] == ["U.S.", "Havana", "Radio Reloj Network", "2100 GMT", "13 Feb 94"]
    (relation,) = first.relations
    assert (relation.head.text, relation.head.label) == ("Radio Reloj Network", "Org")
    assert (relation.tail.text, relation.tail.label) == ("Havana", "Loc")
    assert relation.label == "OrgBased_In"
    assert relation.head in first.entities and relation.tail in first.entities


def test_conll04_tags_are_strictly_valid_bilou(shared_data):
    for split in ("train", "dev"):
        records = read_conll04(shared_data / "conll04" / f"{split}.json", strict=True)
        assert all(not r.check_offsets() for r in records)


# --- format details ----------------------------------------------------------------------------

def test_space_separated_columns_lone_tab_separators_and_runs_of_blank_lines(tmp_path):
    path = write(tmp_path, "multi.txt",
                 "\n\nEcce X B-X B-OTH\nhomo X B-X I-OTH\n\t\n\n   \nJesu X B-X B-PER\n. X B-X O")
    records = read_conll(path, lang="de")
    assert [r.text for r in records] == ["Ecce homo", "Jesu ."]
    assert [r.id for r in records] == ["multi-0", "multi-1"]
    assert records[0].entities == [Entity(0, 9, "OTH", "Ecce homo")]
    assert records[1].meta == {"line": 8} and records[1].lang == "de"


def test_docstart_lines_count_documents_and_mark_records(tmp_path):
    path = write(tmp_path, "docs.txt",
                 "-DOCSTART- -X- -X- O\n\nEU\tB-ORG\n\nrejects\tO\n-DOCSTART-\tO\n\nPeter\tB-PER\n")
    report = ReadReport(str(path))
    records = list(iter_conll(path, report=report))
    assert [r.meta["doc"] for r in records] == [0, 0, 1]
    assert (report.sentences, report.tokens, report.documents) == (3, 3, 2)


def test_label_map_renames_and_passes_unmapped_labels(tmp_path):
    path = write(tmp_path, "m.txt", "EU\tB-organisation\nPeter\tB-person\n")
    (record,) = read_conll(path, label_map={"organisation": "organization"})
    assert [e.label for e in record.entities] == ["organization", "person"]


def test_auto_scheme_is_detected_for_the_whole_file(tmp_path):
    path = write(tmp_path, "ru.txt", "a X B-X O\nb X B-X I-PER\n\nc X B-X B-LOC\n")
    report = conll_counts(path, scheme="auto")
    assert report.scheme == "iob1"


# --- bad input: every error names the file and the line ----------------------------------------

def assert_names_place(err: pytest.ExceptionInfo, path: Path, line: int) -> None:
    message = str(err.value)
    assert path.name in message and f"line {line}" in message, message
    assert err.value.line == line


def test_line_with_too_few_columns(tmp_path):
    path = write(tmp_path, "short.txt", "EU\tB-ORG\nrejects\tO\n\nlonely\n")
    with pytest.raises(DataFormatError, match="column") as err:
        read_conll(path)
    assert_names_place(err, path, 4)


def test_line_with_a_different_column_count(tmp_path):
    path = write(tmp_path, "ragged.txt", "Ecce X B-X B-OTH\nhomo B-X I-OTH\n")
    with pytest.raises(DataFormatError, match="3 columns where line 1 has 4") as err:
        read_conll(path)
    assert_names_place(err, path, 2)


def test_tag_of_another_scheme(tmp_path):
    path = write(tmp_path, "bilou.txt", "EU\tO\n\nPeter\tB-PER\nBlackburn\tL-PER\n")
    with pytest.raises(DataFormatError, match="'L'") as err:
        read_conll(path, scheme="bio")
    assert_names_place(err, path, 4)


def test_unknown_scheme_name_lists_schemes(tmp_path):
    path = write(tmp_path, "x.txt", "EU\tO\n")
    with pytest.raises(ValueError, match="known schemes: bio, iob1, bilou"):
        read_conll(path, scheme="bioul")


def test_undecodable_sequence_in_strict_mode_names_the_token_line(tmp_path):
    path = write(tmp_path, "strict.txt", "EU\tB-ORG\n\nthe\tO\nEuropean\tI-ORG\n")
    assert [e.text for r in read_conll(path) for e in r.entities] == ["EU", "European"]
    with pytest.raises(DataFormatError, match="I-ORG") as err:
        read_conll(path, strict=True)
    assert_names_place(err, path, 4)


def test_non_utf8_byte(tmp_path):
    path = write(tmp_path, "latin1.txt", b"EU\tB-ORG\n\nK\xf6ln\tB-LOC\n")
    with pytest.raises(DataFormatError, match="UTF-8") as err:
        read_conll(path)
    assert_names_place(err, path, 3)


@pytest.mark.parametrize("content", ["", "\n\n\t\n", "-DOCSTART- -X- -X- O\n\n"])
def test_file_without_sentences(tmp_path, content):
    path = write(tmp_path, "empty.txt", content)
    with pytest.raises(DataFormatError, match="no sentences") as err:
        read_conll(path)
    assert_names_place(err, path, max(1, content.count("\n")))


def test_conll04_out_of_range_relation_index_names_the_sentence(tmp_path):
    sentences = [
        {"tokens": ["Smith", "left"], "tags": ["U-Peop", "O"], "relations": [], "orig_id": 1},
        {"tokens": ["Smith", "works", "for", "IBM"], "tags": ["U-Peop", "O", "O", "U-Org"],
         "relations": [{"head": 0, "tail": 2, "type": "Work_For"}], "orig_id": 2},
    ]
    path = write(tmp_path, "bad.json", json.dumps(sentences))
    with pytest.raises(DataFormatError, match=r"sentence 1 \(orig_id 2\).*tail index 2") as err:
        read_conll04(path)
    assert "bad.json" in str(err.value) and err.value.field == "[1].relations[0].tail"


def test_conll04_invalid_json_names_the_line(tmp_path):
    path = write(tmp_path, "broken.json", '[\n{"tokens": ["a"],\n "tags": ["O"],,}\n]')
    with pytest.raises(DataFormatError, match="invalid JSON") as err:
        read_conll04(path)
    assert_names_place(err, path, 3)


# --- writing -----------------------------------------------------------------------------------

def test_write_conll_rejects_entities_off_token_boundaries(tmp_path):
    record = Record("r", "New York", tokens=["New", "York"], entities=[Entity(0, 6, "LOC", "New Yo")])
    with pytest.raises(ValueError, match="token boundaries"):
        write_conll([record], tmp_path / "out.txt")


def test_write_conll_needs_tokens(tmp_path):
    with pytest.raises(ValueError, match="no tokens"):
        write_conll([Record("r", "New York")], tmp_path / "out.txt")


def test_write_conll_iob1_and_bilou(tmp_path):
    record = Record("r", "Peter Blackburn in Paris", tokens=["Peter", "Blackburn", "in", "Paris"],
                    entities=[Entity(0, 15, "PER", "Peter Blackburn"), Entity(19, 24, "LOC", "Paris")])
    for scheme, tags in [("iob1", ["I-PER", "I-PER", "O", "I-LOC"]), ("bilou", ["B-PER", "L-PER", "O", "U-LOC"])]:
        path = tmp_path / f"{scheme}.txt"
        write_conll([record], path, scheme=scheme)
        assert [t for _, t in original_sentences(path)[0]] == tags
        (again,) = read_conll(path, scheme=scheme, strict=True)
        assert again.entities == record.entities


# --- dispatch ----------------------------------------------------------------------------------

def test_read_records_dispatches_by_extension(tmp_path):
    conll = write(tmp_path, "user.bio", "Peter\tB-PER\nBlackburn\tI-PER\n")
    records = read_records(conll)
    assert records[0].entities == [Entity(0, 15, "PER", "Peter Blackburn")]
    jsonl = tmp_path / "user.jsonl"
    write_jsonl(records, jsonl)
    assert read_records(jsonl) == records
    spert = write(tmp_path, "user.json", json.dumps([{"tokens": ["IBM"], "entities": [
        {"type": "Org", "start": 0, "end": 1}], "relations": []}]))
    assert read_records(spert)[0].entities == [Entity(0, 3, "Org", "IBM")]
    with pytest.raises(ValueError, match="known formats"):
        read_records(conll, format="xml")
    with pytest.raises(ValueError, match="extension"):
        read_records(tmp_path / "user.xml")
