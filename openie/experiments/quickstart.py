"""``openie quickstart``: the first run, showing in minutes on any CPU what openie is for.

The same evaluation records are extracted twice by one engine, with the same prompt template,
model and ``k``: once with ``k`` random demonstrations from the pool, once with the ``k`` the
retriever ranks highest (BM25 by default), so the only difference between the two F1 lines is
how demonstrations were chosen. The corpus ships inside openie (``conll2003_sample``), so
nothing outside PyPI is needed; only the model it runs is prepared. Both arms are ordinary
``openie extract`` runs (resumable, cached, with their ``.run.json`` configuration), and an HTML
page shows gold against predicted spans with every prompt and raw answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openie.engines.base import Engine
from openie.experiments.extract import ExtractSummary, extract_file, io_path

DEFAULT_DATA = "conll2003_sample"
PAGE_NAME = "report.html"


@dataclass
class QuickstartResult:
    """Both arms' summaries, the page, and where the time went (seconds)."""

    out: Path
    arms: dict[str, ExtractSummary]
    page: Path
    dtype: str | None
    hardware: str
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def difference(self) -> float:
        return (self.arms["retrieved"].f1 or 0.0) - (self.arms["random"].f1 or 0.0)

    def lines(self) -> list[str]:
        r, d = self.arms["random"], self.arms["retrieved"]
        retriever = self.settings.get("retriever", "retriever")
        k = self.settings.get("k")
        return [
            f"random demonstrations    (k={k}): strict F1 {r.f1:.4f}  (P {r.precision:.4f} R {r.recall:.4f}, "
            f"{r.records} records, {r.parse_problems} parse problems, {r.cut_at_max_tokens} answers cut)",
            f"retrieved demonstrations (k={k}, {retriever}): strict F1 {d.f1:.4f}  (P {d.precision:.4f} "
            f"R {d.recall:.4f}, {d.records} records, {d.parse_problems} parse problems, "
            f"{d.cut_at_max_tokens} answers cut)",
            f"difference (retrieved - random): {self.difference:+.4f} F1",
        ]


def run_quickstart(out: str | Path = "openie-quickstart", *, model: str = "gemma-3-270m", backend: str = "auto",
                   data: str = DEFAULT_DATA, limit: int = 50, k: int = 4, retriever: str = "bm25s",
                   template: str = "ner.ruie.v1", max_tokens: int = 48, batch_size: int = 25,
                   engine_options: Mapping[str, Any] | None = None, engine: Engine | None = None,
                   data_root: str | None = None, show_progress: bool = True,
                   say: Callable[[str], None] = print) -> QuickstartResult:
    """Random vs retrieved demonstrations on ``limit`` records of ``data``'s dev split (pool: its train split).

    ``engine`` injects a built engine (tests); otherwise one is created from ``backend``, ``model``
    and ``engine_options`` (``dtype`` among them, default ``auto``), cached in ``out/cache.sqlite``.
    """
    from openie.engines import close_engine, create_engine
    from openie.engines.hardware import announce, hardware_summary, resolve_dtype
    from openie.models import resolve_model

    if k < 1 or limit < 1:
        raise ValueError(f"the quickstart compares demonstrations: k and limit must be >= 1 (got k={k}, limit={limit})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    hardware = hardware_summary()
    say(f"hardware: {hardware}")
    options = dict(engine_options or {})
    owned = engine is None
    if engine is None:
        device = str(options.get("device", "auto")) if backend == "hf" else "auto"
        choice = resolve_dtype(options.get("dtype", "auto"), device)
        announce(choice)
        options["dtype"] = choice.dtype
        t = time.perf_counter()
        say(f"model {model}: {resolve_model(model)}")  # converted once, then reused
        seconds["prepare_model"] = round(time.perf_counter() - t, 1)
        t = time.perf_counter()
        engine = create_engine(backend, model, cache=out / "cache.sqlite", **options)
        seconds["start_engine"] = round(time.perf_counter() - t, 1)
        say(f"engine started in {seconds['start_engine']:.0f} s")
    dtype = options.get("dtype") or getattr(engine, "dtype", None)
    settings = {"data": f"{data}:dev", "pool": f"{data}:train", "limit": limit, "k": k, "retriever": retriever,
                "template": template, "model": model, "backend": backend, "max_tokens": max_tokens,
                "dtype": str(dtype) if dtype is not None else None}
    arms: dict[str, ExtractSummary] = {}
    try:
        for arm, selector in (("random", "random"), ("retrieved", retriever)):
            t = time.perf_counter()
            arms[arm] = extract_file(f"{data}:dev", out / arm / "predictions.jsonl", template=template, engine=engine,
                                     demonstrations=f"{data}:train", retriever=selector, k=k, limit=limit,
                                     max_tokens=max_tokens, batch_size=batch_size, save_io=True,
                                     show_progress=show_progress, data_root=data_root)
            seconds[f"extract_{arm}"] = round(time.perf_counter() - t, 1)
            s = arms[arm]
            say(f"{arm}: {s.records} records, {s.prompt_tokens} prompt + {s.completion_tokens} generated tokens "
                f"in {s.extract_seconds:.0f} s" + (f" ({s.resumed} resumed)" if s.resumed else ""))
    finally:
        if owned:
            close_engine(engine)  # the cache wrapper and the engine inside it
    page = write_page(out, arms, settings, hardware, data_root)
    seconds["total"] = round(time.perf_counter() - t0, 1)
    result = QuickstartResult(out, arms, page, settings["dtype"], hardware, seconds, settings)
    (out / "summary.json").write_text(json.dumps({
        "settings": settings, "hardware": hardware, "seconds": seconds,
        "arms": {name: s.to_dict() for name, s in arms.items()}, "difference": round(result.difference, 4),
    }, indent=2) + "\n", encoding="utf-8")
    return result


def write_page(out: Path, arms: Mapping[str, ExtractSummary], settings: Mapping[str, Any], hardware: str,
               data_root: str | None = None) -> Path:
    """``out/report.html``: gold vs each arm's spans, with prompts and raw answers."""
    from openie.datasets import load_dataset
    from openie.display import comparison_page
    from openie.records import iter_jsonl

    name, _, split = str(settings["data"]).partition(":")
    gold = load_dataset(name, split, data_root=data_root)[: int(settings["limit"])]
    shown = []
    for arm, summary in arms.items():
        preds = {p.id: p for p in iter_jsonl(summary.output)}
        io_file = io_path(Path(summary.output))
        io = {}
        if io_file.is_file():
            for line in io_file.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                io[entry["id"]] = entry.get("io") or []
        shown.append((arm, preds, io))
    notes = [f"{settings['model']} ({settings['backend']}, {settings['dtype']}), template {settings['template']}, "
             f"k={settings['k']} demonstrations from {settings['pool']}; {settings['limit']} records of "
             f"{settings['data']}. Hardware: {hardware}."]
    notes += [f"{arm}: strict F1 {s.f1:.4f} (P {s.precision:.4f} R {s.recall:.4f})" for arm, s in arms.items()
              if s.f1 is not None]
    page = out / PAGE_NAME
    page.write_text(comparison_page("openie quickstart: random vs retrieved demonstrations", notes, gold, shown),
                    encoding="utf-8")
    return page
