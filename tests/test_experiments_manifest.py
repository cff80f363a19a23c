"""The reproducibility manifest: checksums of the files a cell's models name, versions, templates, seeds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from openie.experiments.manifest import build_manifest, folder_checksums, manifest_markdown, package_versions
from openie.experiments.report import CellRow, write_report


def _cell(root: Path, name: str, model: Path, seed: int) -> CellRow:
    folder = root / name
    folder.mkdir(parents=True)
    config = {"dataset": "conll2003", "sample_seed": seed, "seeds": [seed],
              "engine": {"backend": "hf", "model": str(model)}, "method": {"name": "icl"},
              "demonstrations": {"strategy": "random", "k": 4, "seed": seed}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "metrics.json").write_text(json.dumps({
        "cell": name, "values": {"seed": seed}, "template_version": "ner.ruie.v1@75151c28a8f0aaaa",
        "dtype": "float32", "hardware": "test cpu", "summary": {"f1": 0.5, "records": 2}}))
    return CellRow(name, folder, {"seed": seed}, {"f1": 0.5}, 1.0, config)


def test_manifest_hashes_each_weight_file_once_and_records_seeds_templates_dtypes(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    (model / "config.json").write_text("{}")  # not a weight file
    rows = [_cell(tmp_path / "exp", "a", model, 0), _cell(tmp_path / "exp", "b", model, 1)]
    manifest = build_manifest(rows)
    entry = manifest["models"][str(model)]
    assert entry["files_sha256"] == {"model.safetensors": hashlib.sha256(b"weights").hexdigest()}
    assert manifest["templates"] == {"ner.ruie.v1": "75151c28a8f0aaaa"}
    assert manifest["seeds"]["b"] == {"sample_seed": 1, "seeds": [1], "demonstrations_seed": 1}
    assert manifest["dtypes"] == {"a": "float32", "b": "float32"} and manifest["cells_ran_on"] == ["test cpu"]
    assert "openie" in manifest["packages"] and manifest["packages"] == package_versions()
    cache = json.loads((model / "openie-checksums.json").read_text())
    assert set(cache) == {"model.safetensors"}
    (model / "model.safetensors").write_bytes(b"retrained")  # a new size: hashed again, never a stale checksum
    assert folder_checksums(model)["model.safetensors"] == hashlib.sha256(b"retrained").hexdigest()
    text = "\n".join(manifest_markdown(manifest))
    assert "## Reproducibility manifest" in text and "ner.ruie.v1@75151c28a8f0" in text


def test_the_encoders_behind_retrieved_demonstrations_are_recorded(tmp_path):
    from openie.experiments.manifest import _models_of

    base = {"engine": {"backend": "hf", "model": "m"}, "method": {"name": "icl"}}
    assert _models_of({**base, "demonstrations": {"strategy": "random", "k": 4}}) == {"m"}
    assert _models_of({**base, "demonstrations": {"strategy": "dense", "k": 0}}) == {"m"}  # zero-shot: no encoder
    assert _models_of({**base, "demonstrations": {"strategy": "dense", "k": 4}}) == {"m", "minilm"}
    assert _models_of({**base, "demonstrations": {"strategy": "dense", "k": 4, "options": {"model": "e5"}}}) == {"m", "e5"}
    rerank = {"strategy": "bm25", "k": 4, "rerank": str(tmp_path / "reward")}
    assert _models_of({**base, "demonstrations": rerank}) == {"m", str(tmp_path / "reward")}


def test_adapters_and_paths_relative_to_the_cell_folder_are_found(tmp_path):
    """A cell's config.yaml names folders relative to itself; the manifest hashes what they point at."""
    adapter = tmp_path / "exp" / "adapters" / "det"
    adapter.mkdir(parents=True)
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    row = _cell(tmp_path / "exp", "a", Path("gemma-3-270m"), 0)
    row.config["engine"]["adapters"] = {"det": "../adapters/det"}
    entry = build_manifest([row])["models"][str(adapter.resolve())]
    assert entry["files_sha256"] == {"adapter_model.safetensors": hashlib.sha256(b"lora").hexdigest()}


def test_a_model_that_is_not_here_is_said_so(tmp_path):
    row = _cell(tmp_path / "exp", "a", Path("some-org/some-hub-model"), 0)
    entry = build_manifest([row])["models"]["some-org/some-hub-model"]
    assert "not found on this machine" in entry["missing"] and "files_sha256" not in entry


def test_every_report_writes_its_manifest(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.safetensors").write_bytes(b"x")
    _cell(tmp_path / "exp", "a", model, 0)
    report = write_report(tmp_path / "exp")
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text())
    assert manifest["models"][str(model)]["files_sha256"]["w.safetensors"] == hashlib.sha256(b"x").hexdigest()
    assert "## Reproducibility manifest" in report.markdown.read_text()
