"""Run an experiment grid: every cell into its own folder, resumable at cell and at record level.

A cell folder holds ``config.yaml`` (the resolved single-cell config, runnable again as it is),
``predictions.jsonl`` (appended and flushed batch by batch), ``timing.json`` (written when the
cell starts and after every batch) and ``metrics.json`` (written last: its presence with a
matching fingerprint is what "finished" means). An interrupted grid started again skips finished
cells, and a half-done cell skips the records it already predicted. Engines are started lazily
and shared by consecutive cells with the same engine settings (a vLLM start costs ~30 s); one is
closed as soon as no remaining cell needs it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from openie.datasets import load_records
from openie.engines import close_engine
from openie.engines.base import Engine
from openie.engines.hardware import hardware_summary
from openie.experiments.config import EngineConfig, ExperimentConfig, cell_options, method_default_pool
from openie.experiments.extract import extract_file, sidecar_path
from openie.experiments.grid import Cell, load_config
from openie.experiments.job import RecordSource
from openie.methods.registry import EngineRequest, get_method
from openie.predictions import read_predictions
from openie.records import Record

EngineFactory = Callable[[EngineConfig, "str | None"], Engine]
RESULTS_ROOT = Path("experiments") / "results"
CONFIG_FILE, PREDICTIONS_FILE, METRICS_FILE, TIMING_FILE = "config.yaml", "predictions.jsonl", "metrics.json", "timing.json"
EXPERIMENT_FILE = "experiment.yaml"


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def evaluation_records(cfg: ExperimentConfig) -> list[Record]:
    """The records a cell predicts: the split, then a seeded sample (kept in corpus order), then ``limit``."""
    records = load_records(f"{cfg.dataset}:{cfg.split}", data_root=cfg.data_root)
    if cfg.sample is not None and cfg.sample < len(records):
        keep = sorted(random.Random(cfg.sample_seed).sample(range(len(records)), cfg.sample))
        records = [records[i] for i in keep]
    if cfg.limit is not None:
        records = records[:cfg.limit]
    return records



# ---------------------------------------------------------------------------------------------
# engines
# ---------------------------------------------------------------------------------------------


def create_cell_engine(engine: EngineConfig, cache: str | None) -> Engine:
    """The default engine factory: :func:`openie.engines.create_engine` with the config's settings."""
    from openie.engines import create_engine

    return create_engine(engine.backend, engine.model, adapters=dict(engine.adapters) or None, cache=cache,
                         dtype=engine.resolved_dtype(), **engine.options)


def cell_engine_config(cfg: ExperimentConfig) -> EngineConfig:
    """The cell's engine settings, with the adapters its method needs loaded (``engine_adapters``)."""
    reg = get_method(cfg.method.name)
    if reg.engine_adapters is None:
        return cfg.engine
    extra = dict(reg.engine_adapters(cell_options(cfg)))
    return EngineConfig(cfg.engine.backend, cfg.engine.model, cfg.engine.dtype, {**cfg.engine.adapters, **extra},
                        cfg.engine.adapter, dict(cfg.engine.options))


def requested_engine_configs(cfg: ExperimentConfig) -> list[EngineConfig]:
    """The engines a cell's method asks for besides the cell's (EL4NER's members on other models),
    with the cell's dtype and engine options."""
    reg = get_method(cfg.method.name)
    return [_engine_config(cfg, r) for r in reg.requested_engines(cell_options(cfg))]


def _engine_config(cfg: ExperimentConfig, request: EngineRequest) -> EngineConfig:
    return EngineConfig(backend=request.backend, model=request.model, dtype=cfg.engine.dtype,
                        adapters=dict(request.adapters), options=dict(cfg.engine.options))


def engine_keys(cfg: ExperimentConfig) -> list[str]:
    """Keys of every engine a cell uses: its own, then those its method asks for (none without an engine)."""
    if not needs_engine(cfg):
        return []
    return [cell_engine_config(cfg).engine_key(cfg.cache_path)] + [
        ec.engine_key(cfg.cache_path) for ec in requested_engine_configs(cfg)]


class EnginePool:
    """Started engines by engine settings; ``release`` closes one when no later cell needs it."""

    def __init__(self, factory: EngineFactory):
        self.factory = factory
        self.engines: dict[str, Engine] = {}

    def get(self, cfg: ExperimentConfig) -> tuple[Engine, float]:
        """The engine for a cell and the seconds spent starting it (0 when reused)."""
        return self.get_engine(cell_engine_config(cfg), cfg.cache_path)

    def get_engine(self, engine: EngineConfig, cache: str | None) -> tuple[Engine, float]:
        key = engine.engine_key(cache)
        if key in self.engines:
            return self.engines[key], 0.0
        start = time.perf_counter()
        self.engines[key] = self.factory(engine, cache)
        return self.engines[key], time.perf_counter() - start

    def release(self, key: str) -> None:
        engine = self.engines.pop(key, None)
        if engine is not None:
            close_engine(engine)

    def close(self) -> None:
        for key in list(self.engines):
            self.release(key)


# ---------------------------------------------------------------------------------------------
# one cell
# ---------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def is_finished(cell_dir: Path, fingerprint: str) -> bool:
    metrics = _read_json(cell_dir / METRICS_FILE)
    return metrics is not None and metrics.get("fingerprint") == fingerprint


def summarize(gold: Sequence[Record], preds: Sequence[Record], task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headline numbers, full ``evaluate`` scores) of one cell."""
    from openie.metrics import evaluate

    report = evaluate(gold, preds, tasks=[task])
    main = report.scores.get(f"{task}.strict", report.scores.get(f"{task}.argument_classification"))  # ee: Arg-C
    boundary = report.scores.get(f"{task}.boundary")
    partial = report.scores.get(f"{task}.partial")
    problems = [len(p.meta.get("parse_problems", [])) for p in preds]
    summary = {
        "precision": main.precision if main else 0.0,
        "recall": main.recall if main else 0.0,
        "f1": main.f1 if main else 0.0,
        "macro_f1": main.macro_f1 if main else None,
        "boundary_f1": boundary.f1 if boundary else None,
        "partial_f1": partial.f1 if partial else None,
        "gold": main.micro.support if main else 0,
        "predicted": main.micro.predicted if main else 0,
        "parse_problems": sum(problems),
        "records_with_parse_problems": sum(1 for n in problems if n),
        "not_found": sum(p.meta.get("alignment", {}).get("not_found", 0) for p in preds),
        "records": len(gold),
    }
    return summary, report.to_dict()


@dataclass
class CellOutcome:
    name: str
    path: Path
    status: str  # "finished" | "skipped"
    summary: dict[str, Any] = field(default_factory=dict)


def needs_engine(cfg: ExperimentConfig) -> bool:
    """Methods with an encoder of their own (GLiNER) start no LLM engine."""
    return get_method(cfg.method.name).needs_engine


def run_arguments(cfg: ExperimentConfig) -> dict[str, Any]:
    """The cell as :func:`~openie.experiments.extract.extract_file` arguments: one job for both entry
    points, so the same settings build the same prompts."""
    m, e, d = cfg.method, cfg.engine, cfg.demonstrations
    args: dict[str, Any] = dict(
        schema=cfg.load_schema(), method=m.name, template=m.template, backend=e.backend, model=e.model,
        adapters=dict(e.adapters), adapter=e.adapter, method_options=dict(m.options), batch_size=m.batch_size,
        max_tokens=m.max_tokens, constrained=m.constrained, max_prompt_tokens=m.max_prompt_tokens,
        data_root=cfg.data_root, default_pool=method_default_pool(cfg), task=cfg.task, save_io=m.save_io,
        engine_options={"dtype": e.resolved_dtype(), **e.options})
    if d.strategy != "none" and d.k:
        args.update(demonstrations=d.pool_sources or None, k=d.k, seed=d.seed if d.seed is not None else cfg.seed,
                    retriever=d.strategy, retriever_options=dict(d.options), retriever_path=d.path, rerank=d.rerank,
                    rerank_candidates=d.candidates)
    return args


def run_cell(cell: Cell, cell_dir: Path, engine: Engine | None, *, engine_start_seconds: float = 0.0,
             force: bool = False, show_progress: bool = True,
             member_engine: Callable[[EngineConfig], Engine] | None = None) -> CellOutcome:
    """Predict a cell's records with the ``openie extract`` job (continuing a half-done cell), then evaluate it.

    ``member_engine(engine_config)`` starts (or reuses) the engines a method asks for besides the
    cell's (default: :func:`create_cell_engine`, closed by the job: pass a pool's to share them).
    """
    cfg = cell.config
    fingerprint = cfg.fingerprint()
    cell_dir.mkdir(parents=True, exist_ok=True)
    cfg.dump(cell_dir / CONFIG_FILE)
    pred_path, timing_path, metrics_path = (cell_dir / f for f in (PREDICTIONS_FILE, TIMING_FILE, METRICS_FILE))
    timing = _read_json(timing_path)
    fresh = (force or timing is None or timing.get("fingerprint") != fingerprint
             or (pred_path.exists() and not sidecar_path(pred_path).exists()))  # written before the one job
    if fresh:  # whatever is here came from another config (or is being redone)
        timing = {"fingerprint": fingerprint, "extract_seconds": 0.0, "prompt_tokens": 0, "completion_tokens": 0,
                  "sessions": [], "finished": False}
    metrics_path.unlink(missing_ok=True)

    gold = evaluation_records(cfg)
    session = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "records": 0, "seconds": 0.0,
               "resumed_after": 0, "engine_start_seconds": round(engine_start_seconds, 3)}
    timing["sessions"].append(session)
    timing["finished"] = False
    _write_json(timing_path, timing)

    engine_for = None
    if member_engine is not None:
        def engine_for(request: EngineRequest) -> Engine:
            return member_engine(_engine_config(cfg, request))

    name = f"{cfg.dataset}:{cfg.split}" + (f" sample={cfg.sample} sample_seed={cfg.sample_seed}" if cfg.sample else "") \
        + (f" limit={cfg.limit}" if cfg.limit else "")
    job = extract_file(RecordSource.of(gold, name), pred_path, **run_arguments(cfg), engine=engine, engine_for=engine_for,
                       overwrite=fresh, show_progress=show_progress, shared_dir=cell_dir.parent, workdir=cell_dir,
                       errors_path=cell_dir / "input-errors.jsonl")
    session.update(records=job.processed, seconds=job.extract_seconds, resumed_after=job.resumed)
    timing["extract_seconds"] = round(timing["extract_seconds"] + job.extract_seconds, 3)
    timing["prompt_tokens"] += job.prompt_tokens
    timing["completion_tokens"] += job.completion_tokens
    _write_json(timing_path, timing)

    start = time.perf_counter()
    done = read_predictions(pred_path)
    preds = [done[r.id] for r in gold]
    summary, scores = summarize(gold, preds, cfg.task)
    summary.update(cut_at_max_tokens=job.cut_at_max_tokens, coverage=job.coverage,
                   incomplete_records=job.incomplete_records if not job.records_without_coverage else None,
                   records_without_coverage=job.records_without_coverage)
    run_record = (_read_json(sidecar_path(pred_path)) or {}).get("config", {})
    timing.update(finished=True, records=len(gold), evaluate_seconds=round(time.perf_counter() - start, 3),
                  records_per_second=round(len(gold) / timing["extract_seconds"], 3) if timing["extract_seconds"] else None)
    _write_json(timing_path, timing)
    _write_json(metrics_path, {
        "experiment": cfg.experiment_name, "cell": cell.name, "values": cell.values,
        "config_hash": cfg.config_hash(), "fingerprint": fingerprint,
        "template_version": run_record.get("template"),
        "dtype": cfg.engine.resolved_dtype() if needs_engine(cfg) else None, "hardware": hardware_summary(),
        "summary": summary, "seconds": timing["extract_seconds"], "scores": scores,
    })
    return CellOutcome(cell.name, cell_dir, "finished", summary)


# ---------------------------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------------------------


def default_output_dir(cells: Sequence[Cell], config_path: Path | None) -> Path:
    """A cell's own ``config.yaml`` runs in its own folder; a grid config under ``experiments/results/NAME``."""
    if config_path is not None and len(cells) == 1 and cells[0].config.source is not None:
        parent = config_path.resolve().parent
        if parent.name == cells[0].name:
            return parent.parent
    return RESULTS_ROOT / cells[0].config.experiment_name


def _engine_order(cells: Sequence[Cell]) -> list[Cell]:
    """Cells grouped by engine settings (first appearance order), so each engine starts once."""
    keys: dict[str, list[Cell]] = {}
    for c in cells:
        keys.setdefault(c.config.engine.engine_key(c.config.cache_path), []).append(c)
    return [c for group in keys.values() for c in group]


def apply_engine_override(cells: Sequence[Cell], override: Mapping[str, Any] | None) -> None:
    """Set ``dtype`` and add ``options`` to the engine of every cell that starts one (command-line
    ``--dtype`` / ``--engine-option``), checked against each cell's backend before any work starts."""
    from openie.engines import check_engine_options
    from openie.engines.hardware import resolve_dtype

    if not override:
        return
    dtype, options = override.get("dtype"), dict(override.get("options") or {})
    if dtype is not None:
        resolve_dtype(dtype, "cpu")  # the name only
    for c in cells:
        if not needs_engine(c.config):
            continue
        e = c.config.engine
        if options:
            check_engine_options(e.backend, options)
            e.options.update(options)
        if dtype is not None:
            e.dtype = dtype


def run_experiment(config: str | Path | Sequence[Cell], out: str | Path | None = None, *,
                   engine_factory: EngineFactory | None = None, force: bool = False,
                   show_progress: bool = True, log: Callable[[str], None] | None = None,
                   engine_override: Mapping[str, Any] | None = None) -> list[CellOutcome]:
    """Run every cell of a config (a path, or cells from :func:`load_config`) under ``out``.

    ``engine_factory(engine_config, cache_path) -> Engine`` builds engines (default:
    :func:`create_cell_engine`); tests pass one returning a ``ScriptedEngine`` or a tiny model.
    ``force`` re-runs finished cells from scratch. ``engine_override`` (``dtype``, ``options``)
    changes every cell's engine settings (:func:`apply_engine_override`).
    """
    config_path = Path(config) if isinstance(config, str | Path) else None
    cells = load_config(config_path) if config_path is not None else list(config)  # type: ignore[arg-type]
    if not cells:
        return []
    apply_engine_override(cells, engine_override)
    root = Path(out) if out is not None else default_output_dir(cells, config_path)
    root.mkdir(parents=True, exist_ok=True)
    say = log or (lambda msg: tqdm.write(msg))
    in_place = config_path is not None and config_path.resolve().parent == (root / cells[0].name).resolve()
    if config_path is not None and not in_place:
        _copy_experiment_config(config_path, root)
    for c in cells:  # preflight: a missing corpus file fails now, not in the ninth cell
        check_inputs(c.config)

    ordered = _engine_order(cells)
    fingerprints = {c.name: c.config.fingerprint() for c in ordered}
    needs_work = {c.name for c in ordered if force or not is_finished(root / c.name, fingerprints[c.name])}
    remaining: dict[str, int] = {}
    for c in (c for c in ordered if c.name in needs_work):
        for key in engine_keys(c.config):
            remaining[key] = remaining.get(key, 0) + 1

    pool = EnginePool(engine_factory or create_cell_engine)
    outcomes: list[CellOutcome] = []
    bar = tqdm(total=len(ordered), desc="cells", unit="cell", disable=not show_progress)
    try:
        for c in ordered:
            cell_dir = root / c.name
            bar.set_postfix_str(c.name[:60])
            if c.name not in needs_work:
                c.config.dump(cell_dir / CONFIG_FILE)  # same run; refreshes what the hash leaves out (description)
                metrics = _read_json(cell_dir / METRICS_FILE) or {}
                outcomes.append(CellOutcome(c.name, cell_dir, "skipped", metrics.get("summary", {})))
                say(f"{c.name}: finished before, skipped")
                bar.update(1)
                continue
            engine, started = pool.get(c.config) if needs_engine(c.config) else (None, 0.0)
            outcome = run_cell(c, cell_dir, engine, engine_start_seconds=started, force=force,
                               show_progress=show_progress,
                               member_engine=lambda ec, cache=c.config.cache_path: pool.get_engine(ec, cache)[0])
            outcomes.append(outcome)
            s = outcome.summary
            say(f"{c.name}: F1 {s['f1']:.4f} (P {s['precision']:.4f} R {s['recall']:.4f}), "
                f"{s['parse_problems']} parse problems, {s['records']} records")
            for key in engine_keys(c.config):
                remaining[key] -= 1
                if remaining[key] == 0:
                    pool.release(key)
            bar.update(1)
    finally:
        bar.close()
        pool.close()
    return outcomes


def check_inputs(cfg: ExperimentConfig) -> None:
    """Raise now when a corpus file a cell needs is missing."""
    from openie.datasets import list_datasets, split_path

    sources = [f"{cfg.dataset}:{cfg.split}"]
    if cfg.demonstrations.k:
        sources += cfg.demonstrations.pool_sources
    for src in sources:
        name, sep, split = src.partition(":")
        path = split_path(name, split, data_root=cfg.data_root) if sep and name in list_datasets() else Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"{src}: {path} does not exist")


def _copy_experiment_config(config_path: Path, root: Path) -> None:
    """Keep the grid config that made the cells beside them (the report quotes it)."""
    target = root / EXPERIMENT_FILE
    text = config_path.read_text(encoding="utf-8")
    source, cwd = config_path.resolve(), Path.cwd().resolve()
    origin = os.path.relpath(source, cwd) if source.is_relative_to(cwd) else str(source)
    target.write_text(f"# copy of {origin} (relative paths inside are relative to that file)\n{text}",
                      encoding="utf-8")

