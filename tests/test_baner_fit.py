"""The BANER experiment end to end on a tiny decoder: adapters, episodes, LoRAHub, cells, report; resumable."""

from __future__ import annotations

import json

import pytest
import yaml

from openie.methods.baner.fit import BANERConfig, BANERConfigError, run_baner_experiment, source_adapters


def write_config(tmp_path, tiny_decoder_path, **overrides):
    config = {"base_model": str(tiny_decoder_path), "sources": {"conll2003": 6, "wnut17": 6}, "steps": 2,
              "batch_size": 2, "domains": ["ai"], "k": [1], "dev_sentences": 3, "lorahub": {"budget": 3},
              "engine": {"backend": "hf", "device": "cpu"}, "workdir": "out/work", **overrides}
    path = tmp_path / "baner.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_bad_config_names_the_file_and_key(tmp_path, tiny_decoder_path):
    with pytest.raises(BANERConfigError, match=r"baner.yaml: unknown keys \['stepz'\]"):
        BANERConfig.load(write_config(tmp_path, tiny_decoder_path, stepz=3))
    with pytest.raises(BANERConfigError, match="baner.yaml: rows: unknown"):
        BANERConfig.load(write_config(tmp_path, tiny_decoder_path, rows=["lora", "magic"]))
    with pytest.raises(BANERConfigError, match="main_source"):
        BANERConfig.load(write_config(tmp_path, tiny_decoder_path, main_source="wnut17", sources={"conll2003": 3}))


def test_rows_ask_for_the_adapters_they_need(tmp_path, tiny_decoder_path):
    cfg = BANERConfig.load(write_config(tmp_path, tiny_decoder_path, rows=["lora"]))
    assert source_adapters(cfg) == {"plain-conll2003": ("conll2003", False)}
    cfg = BANERConfig.load(write_config(tmp_path, tiny_decoder_path))
    assert set(source_adapters(cfg)) == {"plain-conll2003", "contrastive-conll2003", "contrastive-wnut17"}
    cfg = BANERConfig.load(write_config(tmp_path, tiny_decoder_path, rows=["lora_contrastive_uniform"]))
    assert set(source_adapters(cfg)) == {"contrastive-conll2003", "contrastive-wnut17"}


def test_uniform_row_merges_the_sources_once_with_equal_weights(tmp_path, tiny_decoder_path):
    import numpy as np

    from openie.methods.baner import lorahub_merge

    path = write_config(tmp_path, tiny_decoder_path, rows=["lora_contrastive_uniform", "lora_contrastive_lorahub"],
                        k=[1, 2])
    results = run_baner_experiment(path, progress=False)
    uniform = results["uniform_merge"]
    assert uniform["weights"] == [0.5, 0.5] and uniform["sources"] == ["conll2003", "wnut17"]
    sources = [results["training"][f"contrastive-{s}"]["path"] for s in ("conll2003", "wnut17")]
    from safetensors.torch import load_file

    saved = load_file(f"{uniform['path']}/adapter_model.safetensors")
    expected = lorahub_merge(sources, [0.5, 0.5])
    assert set(saved) == set(expected)
    assert all(np.allclose(saved[k].numpy(), expected[k].numpy()) for k in expected)
    cells = {(c["row"], c["k"]): c for c in results["cells"]}
    assert set(cells) == {(r, k) for r in ("lora_contrastive_uniform", "lora_contrastive_lorahub") for k in (1, 2)}
    assert {c["adapter"] for (r, _), c in cells.items() if r == "lora_contrastive_uniform"} == {"uniform-merge"}
    assert len(results["lorahub"]) == 2  # one search per episode, none for the uniform row
    # detection does not see the support set under a fixed merge: both K give the same spans
    assert cells[("lora_contrastive_uniform", 1)]["boundary"] == cells[("lora_contrastive_uniform", 2)]["boundary"]
    assert "Uniform merge" in (tmp_path / "out" / "report.md").read_text()


def test_experiment_runs_every_stage_and_resumes_without_redoing_work(tmp_path, tiny_decoder_path):
    path = write_config(tmp_path, tiny_decoder_path)
    results = run_baner_experiment(path, progress=False)
    assert set(results["training"]) == {"plain-conll2003", "contrastive-conll2003", "contrastive-wnut17"}
    assert results["training"]["contrastive-conll2003"]["layer"] is not None
    assert results["training"]["plain-conll2003"]["layer"] is None
    [hub] = results["lorahub"].values()
    assert len(hub["weights"]) == 2 and hub["evaluations"] <= 3
    assert {c["row"] for c in results["cells"]} == {"lora", "lora_contrastive", "lora_contrastive_uniform",
                                                    "lora_contrastive_lorahub"}
    for cell in results["cells"]:
        assert cell["dev_sentences"] == 3 and 0.0 <= cell["boundary"]["f1"] <= 1.0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Boundary F1" in report and "LoRAHub weights" in report
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["steps"] == 2
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "work").rglob("*.json") if "cells" in p.parts}
    again = run_baner_experiment(path, progress=False)
    assert again["cells"] == results["cells"]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # no cell recomputed
    # a changed setting misses the old cells instead of reporting them
    changed = run_baner_experiment(write_config(tmp_path, tiny_decoder_path, dev_sentences=2), progress=False)
    assert {c["dev_sentences"] for c in changed["cells"]} == {2} and len(changed["cells"]) == 4
    with pytest.raises(Exception, match="settings differ"):  # a retrained adapter is never silently reused
        run_baner_experiment(write_config(tmp_path, tiny_decoder_path, lr=1e-3), progress=False)
