from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from openie.experiments.config import ConfigError, ExperimentConfig
from openie.experiments.grid import cell_name, expand, load_cell, load_config

BASE = """\
name: smoke
dataset: wnut16
split: train
sample: 6
method:
  template: ner.ruie.v1
  max_tokens: 16
engine:
  backend: hf
  model: tiny
"""


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_grid_expands_to_the_cartesian_product_times_seeds(tmp_path):
    path = write(tmp_path, BASE + textwrap.dedent("""\
        seeds: [1, 2]
        grid:
          demonstrations.k: [0, 4]
          method.template: [ner.ruie.v1, ner.json.v1]
        """))
    cells = load_config(path)
    assert len(cells) == 8
    assert [c.values for c in cells[:3]] == [
        {"demonstrations.k": 0, "method.template": "ner.ruie.v1", "seed": 1},
        {"demonstrations.k": 0, "method.template": "ner.ruie.v1", "seed": 2},
        {"demonstrations.k": 0, "method.template": "ner.json.v1", "seed": 1},
    ]
    assert len({c.name for c in cells}) == 8 and all(c.name.startswith("k-") for c in cells)
    four_shot = [c for c in cells if c.values["demonstrations.k"] == 4]
    # defaults that depend on other keys are resolved: pool = the dataset's train split, seed = run seed
    assert {(c.config.demonstrations.pool, c.config.demonstrations.seed) for c in four_shot} == {
        ("wnut16:train", 1), ("wnut16:train", 2)}
    zero = cells[0].config
    assert zero.demonstrations.strategy == "none" and zero.demonstrations.pool is None and zero.seeds == [1]
    assert all(c.config.cell.experiment == "smoke" and not c.config.grid for c in cells)


def test_a_grid_value_can_replace_a_whole_section_and_name_a_dataset(tmp_path):
    path = write(tmp_path, BASE.replace("dataset: wnut16\nsplit: train\n", "split: dev\n") + textwrap.dedent("""\
        grid:
          dataset: [crossner_ai, crossner_music]
          demonstrations: [none, {k: 2, seed: 7}]
        """))
    cells = load_config(path)
    assert [c.config.dataset for c in cells] == ["crossner_ai", "crossner_ai", "crossner_music", "crossner_music"]
    assert cells[1].config.demonstrations.pool == "crossner_ai:train" and cells[1].config.demonstrations.seed == 7
    assert cells[3].config.demonstrations.pool == "crossner_music:train"
    assert cells[0].name.startswith("dataset-crossner_ai__demonstrations-none__")


def test_a_cells_resolved_config_round_trips_to_the_same_run(tmp_path):
    path = write(tmp_path, BASE + "grid:\n  demonstrations.k: [0, 3]\n")
    cell = load_config(path)[1]
    out = tmp_path / "results" / cell.name / "config.yaml"
    out.parent.mkdir(parents=True)
    cell.config.dump(out)
    again = load_cell(out)
    assert again.config_hash() == cell.config.config_hash()
    assert again.cell.name == cell.name and again.cell.values == {"demonstrations.k": 3}
    assert load_config(out)[0].name == cell.name
    saved = yaml.safe_load(out.read_text())
    assert "grid" not in saved and saved["demonstrations"] == {
        "strategy": "random", "pool": "wnut16:train", "k": 3, "seed": 0, "options": {}, "path": None,
        "rerank": None, "candidates": None, "label": None}


def test_hash_ignores_names_and_cache_but_not_what_changes_outputs(tmp_path):
    data = yaml.safe_load(BASE)
    base = expand(data, base=tmp_path)[0].config.config_hash()
    assert expand({**data, "name": "other", "cache": False, "description": "x"}, base=tmp_path)[0].config.config_hash() == base
    assert expand({**data, "sample": 7}, base=tmp_path)[0].config.config_hash() != base
    assert cell_name({"dataset": "crossner_ai", "demonstrations.k": 4}, "1a2b3c4d5e") == "dataset-crossner_ai__k-4__1a2b3c4d"


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "people.yaml").write_text("entities: [{name: person, description: a person}]\n")
    path = write(tmp_path, BASE + "schema: schemas/people.yaml\ncache: cache/run.sqlite\n")
    cfg = load_config(path)[0].config
    assert Path(cfg.schema) == tmp_path / "schemas" / "people.yaml"
    assert cfg.cache_path == str(tmp_path / "cache" / "run.sqlite")
    assert cfg.load_schema().entity_labels == ["person"]


def test_inline_schema_maps_labels_to_descriptions(tmp_path):
    path = write(tmp_path, BASE + "schema:\n  entities: {person: a named person, company: a firm}\n")
    schema = load_config(path)[0].config.load_schema()
    assert schema.entity_labels == ["person", "company"] and schema.description("company") == "a firm"


@pytest.mark.parametrize(("snippet", "key", "line", "words"), [
    ("method:\n  template: ner.ruie.v1\n  max_tokenz: 16\n", "method.max_tokenz", 3, "did you mean 'max_tokens'"),
    ("modle: x\n", "modle", 1, "unknown key"),
    ("engine:\n  backend: hff\n", "engine.backend", 2, "did you mean 'hf'"),
    ("demonstrations:\n  k: -1\n", "demonstrations.k", 2, "at least 0"),
    ("demonstrations:\n  strategy: none\n  k: 2\n", "demonstrations.k", 3, "needs a strategy other than 'none'"),
    ("demonstrations:\n  pool: wnut16:dev\n  k: 2\n", "demonstrations.pool", 2, "split of wnut16"),
    ("sample: many\n", "sample", 1, "expected an integer"),
    ("method:\n  constrained: yes please\n", "method.constrained", 2, "true/false"),
    ("method:\n  template: re.ruie.v1\n", "method.template", 2, "is for task 're'"),
    ("split: dev\n", "split", 1, "split of wnut16"),
    ("seeds: []\n", "seeds", 1, "at least one seed"),
    ("schema: missing.yaml\n", "schema", 1, "does not exist"),
    ("engine:\n  adapter: ner\n", "engine.adapter", 2, "not one of engine.adapters"),
])
def test_validation_errors_name_the_key_file_and_line(tmp_path, snippet, key, line, words):
    # the snippet's top-level sections replace BASE's, and come last in the file
    replaced = set(yaml.safe_load(snippet))
    kept, skipping = [], False
    for text_line in BASE.splitlines():
        if not text_line.startswith(" "):
            skipping = text_line.split(":")[0] in replaced
        if not skipping:
            kept.append(text_line)
    path = write(tmp_path, "\n".join(kept) + "\n" + snippet)
    offset = len(kept)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert err.value.key == key and key in message and words in message, message
    assert str(path) in message and err.value.line == offset + line, message


@pytest.mark.parametrize(("grid", "words"), [
    ("  demonstrations.kk: [0, 4]\n", "unknown key 'kk' in 'demonstrations' (did you mean 'demonstrations.k'?)"),
    ("  method.template.v: [1]\n", "is a value"),
    ("  seeds: [[1], [2]]\n", "cannot be a grid key"),
    ("  demonstrations.k: 4\n", "non-empty list"),
])
def test_bad_grid_keys_are_named(tmp_path, grid, words):
    path = write(tmp_path, BASE + "grid:\n" + grid)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert words in str(err.value) and err.value.line == len(BASE.splitlines()) + 2, str(err.value)


def test_a_bad_grid_value_points_at_its_line_and_cell(tmp_path):
    path = write(tmp_path, BASE + "grid:\n  method.template:\n    - ner.ruie.v1\n    - ner.nope.v1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "in grid cell method.template=ner.nope.v1" in message and "unknown template 'ner.nope.v1'" in message
    assert err.value.line == len(BASE.splitlines()) + 4 and err.value.key == "method.template"


def test_yaml_syntax_errors_and_missing_keys(tmp_path):
    with pytest.raises(ConfigError, match="line 2"):
        load_config(write(tmp_path, "dataset: wnut16\n  split: [\n"))
    with pytest.raises(ConfigError, match="missing required key.*dataset"):
        load_config(write(tmp_path, "split: dev\n", "b.yaml"))
    with pytest.raises(ConfigError, match="unknown dataset 'wnut15'.*did you mean"):
        load_config(write(tmp_path, "dataset: wnut15\n", "c.yaml"))


def test_config_dataclass_defaults():
    cfg = ExperimentConfig(dataset="wnut16")
    assert cfg.method.template == "ner.ruie.v1" and cfg.seeds == [0] and cfg.cache_path is None
    assert cfg.engine.engine_key(None) == ExperimentConfig(dataset="conll2003").engine.engine_key(None)


def test_grid_cells_that_resolve_to_the_same_run_are_run_once(tmp_path):
    path = write(tmp_path, BASE + "grid:\n  demonstrations.k: [0, 2]\n  demonstrations.seed: [1, 2]\n")
    cells = load_config(path)
    assert [c.values for c in cells] == [{"demonstrations.k": 0, "demonstrations.seed": 1},
                                         {"demonstrations.k": 2, "demonstrations.seed": 1},
                                         {"demonstrations.k": 2, "demonstrations.seed": 2}]


def test_a_grid_block_merges_into_the_top_level_block_it_overrides(tmp_path):
    """k only in the top-level block: every cell keeps it (it used to turn every cell zero-shot)."""
    path = write(tmp_path, BASE.replace("dataset: wnut16\nsplit: train\n", "split: dev\n") + textwrap.dedent("""\
        demonstrations: {strategy: random, k: 8}
        grid:
          dataset: [crossner_ai, crossner_music]
          demonstrations:
            - {label: random, strategy: random, pool: [conll2003:train, crossner_ai:train]}
            - {label: bm25, strategy: bm25s, pool: [conll2003:train, crossner_ai:train]}
        """))
    cells = load_config(path)
    assert len(cells) == 4 and {c.config.demonstrations.k for c in cells} == {8}
    assert [(c.config.dataset, c.config.demonstrations.strategy) for c in cells] == [
        ("crossner_ai", "random"), ("crossner_ai", "bm25s"), ("crossner_music", "random"), ("crossner_music", "bm25s")]
    assert all(c.config.demonstrations.pool == ["conll2003:train", "crossner_ai:train"] for c in cells)


def test_grid_cells_that_collapse_into_one_run_are_refused_naming_the_key(tmp_path):
    path = write(tmp_path, BASE + textwrap.dedent("""\
        demonstrations: {k: 2}
        grid:
          demonstrations:
            - {label: first, strategy: bm25s}
            - {label: second, strategy: bm25s}
        """))
    with pytest.raises(ConfigError, match=r"grid cells collapse into the same run \(demonstrations: ") as err:
        load_config(path)
    assert err.value.key == "grid.demonstrations" and err.value.line == 15


def test_a_row_axis_sets_several_keys_together_crossed_with_the_other_axes(tmp_path):
    path = write(tmp_path, BASE + textwrap.dedent("""\
        grid:
          dataset: [wnut16, conll2003]
          row:
            - {label: zero-json, method.template: ner.json.v1, demonstrations.k: 0}
            - {label: four-ruie, method.template: ner.ruie.v1, demonstrations.k: 4, engine.model: other}
        """))
    cells = load_config(path)
    assert len(cells) == 4 and [c.name.split("__")[:2] for c in cells[:2]] == [
        ["dataset-wnut16", "row-zero-json"], ["dataset-wnut16", "row-four-ruie"]]
    zero, four = cells[0].config, cells[1].config
    assert zero.method.template == "ner.json.v1" and zero.demonstrations.k == 0 and zero.engine.model == "tiny"
    assert four.method.template == "ner.ruie.v1" and four.demonstrations.k == 4 and four.engine.model == "other"
    assert cells[1].values["row"]["label"] == "four-ruie"


@pytest.mark.parametrize("rows, words", [
    ("    - {method.template: ner.json.v1}\n", "expected a mapping with a 'label'"),
    ("    - {label: a, method.template: ner.json.v1}\n    - {label: a, demonstrations.k: 0}\n", "used twice"),
    ("    - {label: a, method.tempalte: ner.json.v1}\n", "unknown key 'tempalte'"),
])
def test_bad_rows_are_named(tmp_path, rows, words):
    with pytest.raises(ConfigError, match=words):
        load_config(write(tmp_path, BASE + "grid:\n  row:\n" + rows))
