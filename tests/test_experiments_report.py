from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from openie.experiments.report import collect_cells, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_cell(root: Path, values: dict, f1: float, seconds: float = 12.5, problems: int = 3) -> Path:
    """A finished cell folder as the runner leaves it (only what the report reads)."""
    name = "__".join(f"{k.split('.')[-1]}-{v}" for k, v in values.items()) + "__abcdef12"
    cell = root / name
    cell.mkdir(parents=True)
    summary = {"precision": f1 + 0.01, "recall": f1 - 0.01, "f1": f1, "macro_f1": f1 / 2,
               "boundary_f1": min(1.0, f1 + 0.1), "partial_f1": f1, "gold": 50, "predicted": 40,
               "parse_problems": problems, "records_with_parse_problems": 1, "not_found": 0, "records": 20}
    (cell / "metrics.json").write_text(json.dumps({"cell": name, "values": values, "summary": summary}))
    (cell / "timing.json").write_text(json.dumps({"extract_seconds": seconds, "finished": True}))
    (cell / "config.yaml").write_text(yaml.safe_dump({"dataset": "x", "cell": {"name": name, "experiment": "demo",
                                                                              "values": values}}))
    return cell


@pytest.fixture
def grid_root(tmp_path) -> Path:
    root = tmp_path / "results" / "demo"
    f1 = {("crossner_ai", 0): 0.1234, ("crossner_ai", 4): 0.2345,
          ("crossner_music", 0): 0.3456, ("crossner_music", 4): 0.4567}
    for (dataset, k), value in f1.items():
        make_cell(root, {"dataset": dataset, "demonstrations.k": k}, value)
    (root / "experiment.yaml").write_text("# copy of nowhere.yaml\nname: demo\ndescription: Zero vs few.\n"
                                          "grid: {dataset: [crossner_music, crossner_ai], demonstrations.k: [0, 4]}\n")
    return root


def test_report_table_has_one_row_per_cell_with_numbers_and_rerun_commands(grid_root):
    report = write_report(grid_root)
    text = report.markdown.read_text()
    assert report.keys == ["dataset", "demonstrations.k"] and len(report.rows) == 4
    assert text.startswith("# Experiment: demo") and "Zero vs few." in text
    table = [line for line in text.splitlines() if line.startswith("| crossner_")]
    rows = [line for line in table if "openie experiment run" in line]
    assert len(rows) == 4
    # the grid config's order (music first), numbers with 4 decimals, seconds, parse problems
    assert rows[0].startswith("| crossner_music | 0 | 0.3556 | 0.3356 | 0.3456 | 0.4456 | 3 | - | 20 | 12.5 |")
    for cell in collect_cells(grid_root):
        assert f"openie experiment run {cell.path / 'config.yaml'} --force" in text
    # pivot: one row per setting, datasets across (grid order), and a mean column
    assert "| demonstrations.k | crossner_music | crossner_ai | **mean** |" in text
    assert "| 0 | 0.3456 | 0.1234 | **0.2345** |" in text and "| 4 | 0.4567 | 0.2345 | **0.3456** |" in text
    assert "![f1](f1.png)" in text and "![boundary_f1](boundary_f1.png)" in text


def test_report_csv_and_plots(grid_root):
    report = write_report(grid_root)
    with report.csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and rows[0]["dataset"] == "crossner_music"
    assert {float(r["f1"]) for r in rows} == {0.1234, 0.2345, 0.3456, 0.4567}
    assert all(r["config"].endswith("config.yaml") for r in rows)
    assert [p.name for p in report.plots] == ["f1.png", "boundary_f1.png"]
    for p in report.plots:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000


def test_report_without_grid_keys_and_with_three(tmp_path):
    single = tmp_path / "single"
    make_cell(single, {}, 0.5)
    report = write_report(single)
    assert report.keys == [] and "| 0.5100 | 0.4900 | 0.5000 |" in report.markdown.read_text()
    three = tmp_path / "three"
    for i, (a, b, c) in enumerate([(x, y, z) for x in "ab" for y in (1, 2) for z in ("p", "q")]):
        make_cell(three, {"a": a, "b": b, "c": c}, i / 10)
    report = write_report(three, tmp_path / "elsewhere")
    assert report.markdown.parent == tmp_path / "elsewhere" and len(report.rows) == 8
    assert all(p.is_file() for p in report.plots)


def test_report_of_an_empty_folder_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished cells"):
        write_report(tmp_path)


def test_report_cli(grid_root):
    from typer.testing import CliRunner

    from openie.cli import app

    result = CliRunner().invoke(app, ["experiment", "report", str(grid_root)])
    assert result.exit_code == 0, result.output
    assert "4 cells" in result.output and (grid_root / "report.md").is_file()
