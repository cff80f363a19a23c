"""The NER Retriever experiment end to end on tiny models and a few real sentences."""

from __future__ import annotations

import json

import pytest
import yaml

from openie.experiments.type_retrieval import TypeRetrievalConfig, TypeRetrievalConfigError, run_type_retrieval
from openie.tools.ner_retriever import NERRetriever


def _config(tmp_path, tiny_decoder_path, tiny_bert_path, tiny_gliner, **over):
    gl = tiny_gliner
    cfg = {"name": "tiny", "model": str(tiny_decoder_path), "module": "self_attn.v_proj", "sweep_layers": [0, 1],
           "sweep_dev": "wnut17:dev", "sweep_steps": 20, "train": ["conll2003:train", "wnut17:train"],
           "train_sample": 40, "projector": {"steps": 30, "batch_size": 16, "hidden_dim": 16},
           "index": ["crossner_ai:dev"], "index_limit": 25, "dense_model": str(tiny_bert_path),
           "gliner": {"model": str(gl), "labels": ["entity"], "threshold": 0.0}, "workdir": "out/work", **over}
    path = tmp_path / "tr.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_runs_every_row_and_resumes_from_cached_vectors(tmp_path, tiny_decoder_path, tiny_bert_path, tiny_gliner_path, shared_data):
    path = _config(tmp_path, tiny_decoder_path, tiny_bert_path, tiny_gliner_path)
    first = run_type_retrieval(path, show_progress=False, log=lambda m: None)
    assert first["chosen_layer"] in (0, 1) and set(first["sweep"]) == {"0", "1"}
    for row in ("ner_retriever_gold", "ner_retriever_gliner", "raw_layer_gold", "bm25", "dense"):
        res = first["results"][row]["crossner_ai:dev"]
        assert 0.0 <= res["macro_r_precision"] <= 1.0 and res["types"] > 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| NER Retriever (gold mentions) |" in report and "## Layer sweep" in report
    assert json.loads((tmp_path / "out" / "results.json").read_text())["config"]["name"] == "tiny"
    cached = sorted(p.name for p in (tmp_path / "out" / "work" / "vectors").glob("*.npz"))
    second = run_type_retrieval(path, show_progress=False, log=lambda m: None)
    assert second["results"] == first["results"]
    assert sorted(p.name for p in (tmp_path / "out" / "work" / "vectors").glob("*.npz")) == cached
    saved = NERRetriever.load(tmp_path / "out" / "work" / "retrievers" / "crossner_ai_dev-gold", show_progress=False)
    assert len(saved.index) > 0 and saved.search("a programming language", 3)


def test_config_errors_name_the_file_and_key(tmp_path, tiny_decoder_path, tiny_bert_path, tiny_gliner_path):
    path = _config(tmp_path, tiny_decoder_path, tiny_bert_path, tiny_gliner_path, rows=["bm25", "nope"])
    with pytest.raises(TypeRetrievalConfigError, match=r"tr.yaml: rows: unknown \['nope'\]"):
        TypeRetrievalConfig.load(path)
    path = _config(tmp_path, tiny_decoder_path, tiny_bert_path, tiny_gliner_path, projector={"stepz": 3})
    with pytest.raises(TypeRetrievalConfigError, match="projector"):
        TypeRetrievalConfig.load(path)
