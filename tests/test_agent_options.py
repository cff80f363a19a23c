from __future__ import annotations

import json

import pytest

from openie.agent.options import COMPILED_DIR, DSPyOptionsError, check_options, from_options
from openie.engines.scripted import ScriptedEngine
from openie.records import write_jsonl
from openie.schema import Schema
from openie.testing import toy_pool

SCHEMA = Schema.from_labels(["person", "location", "organization", "product"])
POOL = toy_pool(12)
GOLD = {r.text: r for r in POOL}
TEST = [POOL[0].without_annotations()]


def json_oracle(request) -> str:
    """The gold entities of the prompt's last ``text`` input, as the JSON adapter's answer."""
    text = request.prompt.rsplit("[[ ## text ## ]]\n", 1)[1].split("\n\n", 1)[0]
    return json.dumps({"entities": [{"text": e.text, "type": e.label} for e in GOLD[text].entities]})


@pytest.fixture()
def pool_file(tmp_path):
    path = tmp_path / "pool.jsonl"
    write_jsonl(POOL, path)
    return str(path)


def test_optimize_options_are_checked_and_named(pool_file):
    resolved = check_options({"optimize": {"n_train": 4}}, task="ner", default_pool=pool_file)
    assert resolved["optimize"]["train"] == [pool_file] and resolved["optimize"]["optimizer"] == "bootstrap"
    assert resolved["optimize"]["max_labeled_demos"] == 4  # the optimiser's own defaults, filled in (and hashed)
    cases = [({"optimize": {"optimizer": "gepa"}}, "optimize.optimizer", "unknown optimizer"),
             ({"optimize": {"num_trials": 3}}, "optimize", r"unknown keys \['num_trials'\]"),
             ({"optimize": {"n_train": 0}}, "optimize.n_train", "at least 1"),
             ({"optimize": {"train": "nope.jsonl"}}, "optimize.train", "neither NAME:SPLIT"),
             ({"optimize": {}, "knn_k": 2}, "optimize", "both choose the demonstrations"),
             ({"optimize": "yes"}, "optimize", "expected a mapping")]
    for options, key, message in cases:
        with pytest.raises(DSPyOptionsError, match=message) as err:
            check_options(options, task="ner", default_pool=pool_file)
        assert err.value.key == key
    with pytest.raises(DSPyOptionsError, match="needs training records"):
        check_options({"optimize": {}}, task="ner")


def test_optimize_compiles_on_the_engine_saves_and_a_rerun_loads_instead(tmp_path, pool_file):
    options = {"dspy_adapter": "json", "pool": pool_file,
               "optimize": {"n_train": 5, "max_bootstrapped_demos": 2, "max_labeled_demos": 3}}
    engine = ScriptedEngine(json_oracle)
    extractor = from_options(engine, SCHEMA, options, task="ner", workdir=tmp_path / "cell")
    report = json.loads((tmp_path / "cell" / COMPILED_DIR / "openie_compile.json").read_text())
    assert report["lm_calls"] == len(engine.calls) >= 2 and report["demos"] == {"self": 3}
    assert len(report["config"]["train_ids"]) == 5 and report["config"]["optimizer"] == "bootstrap"
    assert extractor.describe()["demos"] == {"self": 3}
    (pred,) = extractor.extract_batch(TEST)
    assert [(e.text, e.label) for e in pred.entities] == [(e.text, e.label) for e in POOL[0].entities]
    # the format description, three demonstrations and the input
    assert engine.calls[-1].prompt.count("[[ ## text ## ]]") == 5

    again = ScriptedEngine(json_oracle)
    reloaded = from_options(again, SCHEMA, options, task="ner", workdir=tmp_path / "cell")
    assert again.calls == [] and reloaded.describe()["state"] == extractor.describe()["state"]

    other = ScriptedEngine(json_oracle)
    from_options(other, SCHEMA, {**options, "optimize": {**options["optimize"], "n_train": 3}}, task="ner",
                 workdir=tmp_path / "cell")
    assert other.calls  # another training sample: compiled afresh
    assert len(json.loads((tmp_path / "cell" / COMPILED_DIR / "openie_compile.json").read_text())
               ["config"]["train_ids"]) == 3


def test_a_compiled_folder_serves_other_runs_through_the_compiled_option(tmp_path, pool_file):
    options = {"dspy_adapter": "json", "pool": pool_file, "optimize": {"n_train": 4, "max_labeled_demos": 2,
                                                                        "max_bootstrapped_demos": 0}}
    first = from_options(ScriptedEngine(json_oracle), SCHEMA, options, task="ner", workdir=tmp_path / "a")
    reuse = from_options(ScriptedEngine(json_oracle), SCHEMA, {"dspy_adapter": "json",
                                                               "compiled": str(tmp_path / "a" / COMPILED_DIR)},
                         task="ner")
    assert reuse.describe()["state"] == first.describe()["state"]
