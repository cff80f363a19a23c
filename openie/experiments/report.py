"""Collect the finished cells of an experiment folder into a markdown table, a CSV and bar charts.

One row per cell: its grid values, strict precision / recall / F1, boundary F1, parse problems,
records and extraction seconds, and the command that re-runs it from its saved ``config.yaml``.
A reproducibility manifest (``manifest.json``: model checksums, package versions, template hashes,
seeds, dtype, hardware) is written beside it.
When the grid has two or more keys a pivot table (first key down, second key across) gives the
comparison at a glance; the plots show each metric by the first grid key grouped by the others.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from openie.experiments.manifest import build_manifest, manifest_markdown

METRICS = (("f1", "strict F1"), ("boundary_f1", "boundary F1"))
COLUMNS = (("precision", "P"), ("recall", "R"), ("f1", "F1"), ("boundary_f1", "boundary F1"),
           ("parse_problems", "parse problems"), ("incomplete_records", "coverage losses"), ("records", "records"),
           ("seconds", "seconds"))


@dataclass
class CellRow:
    name: str
    path: Path
    values: dict[str, Any]
    summary: dict[str, Any]
    seconds: float | None
    config: dict[str, Any] = field(default_factory=dict)
    engine_start_seconds: float = 0.0

    def metric(self, key: str) -> Any:
        return self.seconds if key == "seconds" else self.summary.get(key)


@dataclass
class Report:
    rows: list[CellRow]
    keys: list[str]
    markdown: Path
    csv: Path
    plots: list[Path]


def _display_path(path: Path) -> str:
    """Relative to the working directory when below it (commands in a committed report stay portable)."""
    try:
        rel = os.path.relpath(path.resolve(), Path.cwd())
    except ValueError:
        return str(path)
    return rel if not rel.startswith("..") else str(path.resolve())


def rerun_command(row: CellRow) -> str:
    return f"openie experiment run {shlex.quote(_display_path(row.path / 'config.yaml'))} --force"


def collect_cells(root: str | Path) -> list[CellRow]:
    """Every finished cell (a folder with ``metrics.json``) below ``root``, sorted by folder."""
    rows = []
    for metrics_path in sorted(Path(root).rglob("metrics.json")):
        cell_dir = metrics_path.parent
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        timing_path = cell_dir / "timing.json"
        timing = json.loads(timing_path.read_text(encoding="utf-8")) if timing_path.is_file() else {}
        config_path = cell_dir / "config.yaml"
        config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        rows.append(CellRow(metrics.get("cell", cell_dir.name), cell_dir, dict(metrics.get("values", {})),
                            dict(metrics.get("summary", {})), timing.get("extract_seconds", metrics.get("seconds")),
                            config or {},
                            sum(x.get("engine_start_seconds", 0.0) for x in timing.get("sessions", []))))
    return rows


def grid_keys(rows: Sequence[CellRow]) -> list[str]:
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r.values))
    return list(keys)


def _fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if key == "seconds" else f"{value:.4f}"
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        return value["label"]
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _natural(values: list[str]) -> list[str]:
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


def _sort_key(rows: Sequence[CellRow], keys: Sequence[str], grid: dict[str, list[Any]] | None = None):
    """Rows in the order the grid config lists its values (first key slowest); else numbers
    numerically and names alphabetically."""
    order: dict[str, dict[str, int]] = {}
    for k in keys:
        seen = list(dict.fromkeys(_fmt(r.values.get(k)) for r in rows))
        listed = [_fmt(v) for v in (grid or {}).get(k, [])]
        ranked = [v for v in listed if v in seen] + _natural([v for v in seen if v not in listed])
        order[k] = {v: i for i, v in enumerate(ranked)}

    def key(r: CellRow) -> tuple:
        return tuple(order[k][_fmt(r.values.get(k))] for k in keys)

    return key


def _pivot_axes(keys: Sequence[str]) -> tuple[list[str], str]:
    """Datasets go across (an ablation table: one row per setting, one column per dataset, then the
    mean); without a dataset key the second grid key goes across. The other keys make the rows."""
    across = "dataset" if "dataset" in keys else keys[1]
    return [k for k in keys if k != across], across


def _pivot(rows: Sequence[CellRow], keys: Sequence[str], metric: str) -> list[str]:
    """Markdown pivot of ``metric`` (rows in report order) with a mean column over the across key."""
    down, across = _pivot_axes(keys)

    def row_label(r: CellRow) -> str:
        if len(down) == 1:
            return _fmt(r.values.get(down[0]))
        return ", ".join(f"{k.split('.')[-1]}={_fmt(r.values.get(k))}" for k in down)

    row_vals = list(dict.fromkeys(row_label(r) for r in rows))
    col_vals = list(dict.fromkeys(_fmt(r.values.get(across)) for r in rows))
    cells: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        v = r.metric(metric)
        if v is not None:
            cells.setdefault((row_label(r), _fmt(r.values.get(across))), []).append(v)

    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    lines = [f"| {' / '.join(down)} | " + " | ".join(col_vals) + " | **mean** |",
             "|---|" + "---:|" * (len(col_vals) + 1)]
    for rv in row_vals:
        values = [mean(cells.get((rv, c), [])) for c in col_vals]
        row_mean = mean([v for v in values if v is not None]) if all(v is not None for v in values) else None
        lines.append(f"| {_md_cell(rv)} | " + " | ".join(_fmt(v) for v in values) + f" | **{_fmt(row_mean)}** |")
    return lines


def plot_metric(rows: Sequence[CellRow], keys: Sequence[str], metric: str, label: str, path: Path) -> Path:
    """Bar chart of one metric: x = first grid key, one bar per value of the other keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = list(rows)  # in report order
    if keys:
        xs = list(dict.fromkeys(_fmt(r.values.get(keys[0])) for r in ordered))
        rest = keys[1:]
        groups = list(dict.fromkeys(", ".join(f"{k}={_fmt(r.values.get(k))}" for k in rest) for r in ordered))
    else:
        xs, rest, groups = [r.name for r in ordered], [], [""]
    values: dict[tuple[str, str], list[float]] = {}
    for r in ordered:
        x = _fmt(r.values.get(keys[0])) if keys else r.name
        g = ", ".join(f"{k}={_fmt(r.values.get(k))}" for k in rest) if keys else ""
        v = r.metric(metric)
        if v is not None:
            values.setdefault((x, g), []).append(float(v))
    width = 0.8 / max(1, len(groups))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(xs) * max(1, len(groups)) ** 0.5 + 2), 3.8))
    for gi, g in enumerate(groups):
        heights = [sum(values.get((x, g), [0.0])) / max(1, len(values.get((x, g), []))) for x in xs]
        pos = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(xs))]
        bars = ax.bar(pos, heights, width, label=g or None)
        ax.bar_label(bars, labels=[f"{h:.2f}" for h in heights], fontsize=7, padding=1)
    ax.set_xticks(range(len(xs)), xs, rotation=20 if max(map(len, xs), default=0) > 10 else 0, ha="right"
                  if max(map(len, xs), default=0) > 10 else "center")
    ax.set_xlabel(keys[0] if keys else "cell")
    ax.set_ylabel(label)
    top = max([h for vs in values.values() for h in vs] + [0.0])
    ax.set_ylim(0, max(0.05, top * 1.2))
    if any(groups):
        ax.legend(fontsize=8, frameon=False)
    ax.set_title(f"{label} by {keys[0] if keys else 'cell'}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _experiment_file(root: Path) -> tuple[dict[str, Any], Path | None]:
    """The grid config copied beside the cells, and the original it was copied from (if it still exists)."""
    exp_file = root / "experiment.yaml"
    if not exp_file.is_file():
        return {}, None
    text = exp_file.read_text(encoding="utf-8")
    exp = yaml.safe_load(text)
    first = text.splitlines()[0] if text else ""
    origin = None
    if first.startswith("# copy of "):
        candidate = Path(first[len("# copy of "):].split(" (")[0])
        origin = candidate if candidate.is_file() else None
    return (exp if isinstance(exp, dict) else {}), origin


def _experiment_header(root: Path, rows: Sequence[CellRow], exp: dict[str, Any], origin: Path | None) -> list[str]:
    names = {r.config.get("cell", {}).get("experiment") for r in rows} - {None, ""}
    title = exp.get("name") or (names.pop() if len(names) == 1 else root.name)
    lines = [f"# Experiment: {title}", ""]
    if exp.get("description"):
        lines += [str(exp["description"]).strip(), ""]
    if origin is not None:
        lines += [f"Config: `{_display_path(origin)}` (copied to `{_display_path(root / 'experiment.yaml')}`). "
                  f"Re-run the whole grid (finished cells are skipped): `openie experiment run "
                  f"{shlex.quote(_display_path(origin))} --out {shlex.quote(_display_path(root))}`", ""]
    return lines


def write_report(root: str | Path, out: str | Path | None = None) -> Report:
    """Write ``report.md``, ``report.csv`` and one PNG per metric into ``out`` (default: ``root``)."""
    root = Path(root)
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    rows = collect_cells(root)
    if not rows:
        raise FileNotFoundError(f"no finished cells (metrics.json) under {root}")
    keys = grid_keys(rows)
    exp, origin = _experiment_file(root)
    grid = exp.get("grid") if isinstance(exp.get("grid"), dict) else None
    rows = sorted(rows, key=_sort_key(rows, keys, grid)) if keys else rows

    csv_path = out / "report.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cell", *keys, *(k for k, _ in COLUMNS), "macro_f1", "partial_f1", "gold", "predicted",
                    "records_with_parse_problems", "config"])
        for r in rows:
            w.writerow([r.name, *(_fmt(r.values.get(k)) for k in keys),
                        *(r.metric(k) if r.metric(k) is not None else "" for k, _ in COLUMNS),
                        *(r.summary.get(k, "") if r.summary.get(k) is not None else ""
                          for k in ("macro_f1", "partial_f1", "gold", "predicted", "records_with_parse_problems")),
                        _display_path(r.path / "config.yaml")])

    plots = [plot_metric(rows, keys, metric, label, out / f"{metric}.png") for metric, label in METRICS]

    lines = _experiment_header(root, rows, exp, origin)
    records = sorted({r.summary.get("records") for r in rows} - {None})
    lines += [f"{len(rows)} cells; {', '.join(map(str, records))} records per cell. Scores are micro-averaged "
              "span scores (strict: exact boundaries and type; boundary: exact boundaries, any type). "
              "Seconds are extraction wall time per cell (engine start-up excluded).", ""]
    total = sum(r.seconds or 0.0 for r in rows)
    starts = sum(r.engine_start_seconds for r in rows)
    lines += [f"Extraction took {total / 60:.1f} min over all cells, plus {starts:.0f} s of engine start-up.", ""]
    if len(keys) >= 2:
        for metric, label in METRICS:
            down, across = _pivot_axes(keys)
            lines += [f"## {label}: {' / '.join(down)} by {across}", "", *_pivot(rows, keys, metric), ""]
    lines += ["## All cells", "",
              "| " + " | ".join([*keys, *(label for _, label in COLUMNS), "re-run"]) + " |",
              "|" + "---|" * len(keys) + "---:|" * len(COLUMNS) + "---|"]
    for r in rows:
        cells = [_md_cell(_fmt(r.values.get(k))) for k in keys]
        cells += [_fmt(r.metric(k), k) for k, _ in COLUMNS]
        cells.append(f"`{_md_cell(rerun_command(r))}`")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Plots", ""]
    lines += [f"![{p.stem}]({os.path.relpath(p, out)})" for p in plots]
    manifest = build_manifest(rows)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    lines += ["", *manifest_markdown(manifest)]
    md_path = out / "report.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Report(rows, keys, md_path, csv_path, plots)
