"""GLiNER as a method: the extractor, ``openie extract --method gliner`` and experiment cells."""

from __future__ import annotations

import json
import textwrap

import pytest

from openie.experiments.config import ConfigError
from openie.experiments.extract import ConfigMismatchError, ExtractError, extract_file
from openie.experiments.grid import load_config
from openie.experiments.run import run_experiment
from openie.methods.gliner import GLiNERExtractor, check_options
from openie.records import Entity, Record, read_jsonl, write_jsonl
from openie.schema import Schema
from openie.tools.gliner import GLiNERToolError

SCHEMA = Schema.from_labels({"person": "a named person", "city": "a city"})


def _records(n=6):
    out = []
    for i, (p, c) in enumerate([("alice", "paris"), ("bob", "berlin"), ("grace", "tokyo")] * (n // 3)):
        text = f"{p} lives in {c} ."
        out.append(Record(f"r{i}", text, entities=[Entity(0, len(p), "person", p),
                                                   Entity(len(p) + 10, len(p) + 10 + len(c), "city", c)]))
    return out


def test_extractor_labels_spans_with_the_schema_types(tiny_gliner_path):
    ex = GLiNERExtractor.from_options(SCHEMA, {"model": str(tiny_gliner_path), "threshold": 0.0})
    preds = ex.extract_batch(_records(3))
    assert [p.id for p in preds] == ["r0", "r1", "r2"] and all(not p.relations for p in preds)
    assert {e.label for p in preds for e in p.entities} <= {"person", "city"}
    assert any(p.entities for p in preds) and ex.stats.records == 3 and ex.task == "ner"
    described = GLiNERExtractor.from_options(SCHEMA, {"model": str(tiny_gliner_path), "labels": "description"})
    assert described.label_prompts == {"person": "a named person", "city": "a city"}
    assert described.describe()["weights"] == ex.describe()["weights"]


def test_options_are_checked():
    with pytest.raises(GLiNERToolError, match="unknown GLiNER options.*'treshold'"):
        check_options({"model": "x", "treshold": 0.2})
    with pytest.raises(GLiNERToolError, match="'model'"):
        check_options({})
    with pytest.raises(GLiNERToolError, match="labels must be"):
        check_options({"model": "x", "labels": "names"})


def test_extract_file_runs_gliner_and_resumes(tiny_gliner_path, tmp_path):
    src = tmp_path / "in.jsonl"
    write_jsonl(_records(6), src)
    out = tmp_path / "pred.jsonl"
    opts = {"model": str(tiny_gliner_path), "threshold": 0.0}
    first = extract_file(src, out, schema=SCHEMA, method="gliner", method_options=opts, batch_size=2, limit=4,
                         show_progress=False)
    assert first.records == 4
    sidecar = json.loads((tmp_path / "pred.jsonl.run.json").read_text())
    assert sidecar["config"]["method"] == "gliner" and sidecar["config"]["model"] is None
    assert len(sidecar["config"]["method_options"]["weights"]) == 16
    second = extract_file(src, out, schema=SCHEMA, method="gliner", method_options=opts, batch_size=2,
                          show_progress=False)
    assert second.resumed == 4 and len(read_jsonl(out)) == 6
    with pytest.raises(ConfigMismatchError, match="method_options"):
        extract_file(src, out, schema=SCHEMA, method="gliner", method_options={**opts, "threshold": 0.9},
                     show_progress=False)
    with pytest.raises(ExtractError, match="no demonstrations"):
        extract_file(src, tmp_path / "x.jsonl", schema=SCHEMA, method="gliner", method_options=opts,
                     demonstrations=str(src), show_progress=False)
    with pytest.raises(ExtractError, match="unknown option of method .icl."):
        extract_file(src, tmp_path / "y.jsonl", schema=SCHEMA, method="icl", method_options={"threshold": 1},
                     show_progress=False)


GRID = """\
name: gliner_cells
dataset: crossner_ai
split: dev
limit: 5
method: {{name: gliner, options: {{model: {model}, threshold: 0.0}}}}
demonstrations: none
grid:
  method.options.labels: [name, description]
"""


def test_experiment_cells_run_gliner_without_an_engine(tiny_gliner_path, tmp_path, shared_data):
    path = tmp_path / "exp.yaml"
    path.write_text(GRID.format(model=tiny_gliner_path))

    def no_engine(*_):
        raise AssertionError("a gliner cell must not start an LLM engine")

    outcomes = run_experiment(path, tmp_path / "out", engine_factory=no_engine, show_progress=False,
                              log=lambda m: None)
    assert [o.status for o in outcomes] == ["finished", "finished"]
    assert all(o.summary["records"] == 5 for o in outcomes)
    again = run_experiment(path, tmp_path / "out", engine_factory=no_engine, show_progress=False, log=lambda m: None)
    assert [o.status for o in again] == ["skipped", "skipped"]


def test_experiment_config_rejects_gliner_misuse(tiny_gliner_path, tmp_path, shared_data):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(f"""\
        dataset: crossner_ai
        method: {{name: gliner, options: {{model: {tiny_gliner_path}, treshold: 0.2}}}}
        """))
    with pytest.raises(ConfigError, match=r"bad.yaml, line 2.*method.options.*treshold"):
        load_config(path)
    path.write_text(textwrap.dedent(f"""\
        dataset: crossner_ai
        method: {{name: gliner, options: {{model: {tiny_gliner_path}}}}}
        demonstrations: {{strategy: random, k: 2}}
        """))
    with pytest.raises(ConfigError, match="demonstrations.k.*no demonstrations"):
        load_config(path)
