"""A method defined only here, registered through the ``openie.methods`` entry-point group, runs through
``openie extract``, a grid cell and Ray with no edit to openie."""

from __future__ import annotations

import functools
import json
import os
import sys
import textwrap
from dataclasses import dataclass

import pytest
from typer.testing import CliRunner

from openie.cli import app
from openie.engines.scripted import ScriptedEngine
from openie.experiments.config import ConfigError
from openie.experiments.extract import ExtractError, extract_file
from openie.experiments.run import run_experiment
from openie.methods import registry
from openie.methods.registry import MethodError, MethodRegistration, get_method, register_method
from openie.records import Entity, Record, read_jsonl, write_jsonl

PLUGIN = '''
"""A third-party method: asks the engine for one span per record and labels it."""
from dataclasses import dataclass

from openie.engines.base import GenerationRequest
from openie.methods.icl import ExtractionStats
from openie.methods.registry import MethodRegistration
from openie.records import Entity


@dataclass
class Options:
    label: str = "person"
    prefix: str = "First word of:"


class FirstWord:
    task = "ner"

    def __init__(self, context, options):
        self.engine, self.options, self.stats = context.engine, options, ExtractionStats()

    def extract_batch(self, records):
        requests = [GenerationRequest(prompt=f"{self.options.prefix} {r.text}", max_tokens=4) for r in records]
        out = []
        for record, generation in zip(records, self.engine.generate(requests), strict=True):
            pred = record.without_annotations()
            word = generation.text.strip()
            start = record.text.find(word) if word else -1
            if start >= 0:
                pred.entities = [Entity(start, start + len(word), self.options.label, word)]
            self.stats.prompts += 1
            self.stats.prompt_tokens += generation.prompt_tokens
            self.stats.completion_tokens += generation.completion_tokens
            out.append(pred)
        return out


def answer(request):
    """The scripted model: the first word after the prefix (importable, so Ray workers can build it)."""
    return request.prompt.split(":", 1)[1].split()[0]


REGISTRATION = MethodRegistration("firstword", lambda context, options: FirstWord(context, options), options=Options,
                                  takes_demonstrations=False, description="the first word, as one entity")
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """An installed distribution in miniature: a module plus a dist-info folder naming its entry point."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "openie_firstword.py").write_text(PLUGIN)
    info = root / "openie_firstword-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: openie-firstword\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[openie.methods]\nfirstword = openie_firstword:REGISTRATION\n")
    sys.path.insert(0, str(root))
    registry._ENTRY_POINTS_LOADED = False
    yield root
    sys.path.remove(str(root))
    registry._REGISTRY.pop("firstword", None)
    registry._ENTRY_POINTS_LOADED = False
    sys.modules.pop("openie_firstword", None)


@pytest.fixture
def records_file(tmp_path):
    path = tmp_path / "in.jsonl"
    write_jsonl([Record(f"r{i}", f"{name} met a friend",
                        entities=[Entity(0, len(name), "person", name)] if name.istitle() else [])
                 for i, name in enumerate(["Ada", "Bob", "the", "Grace", "Alan", "a"])], path)
    return path


def scripted():
    import openie_firstword

    return ScriptedEngine(openie_firstword.answer)


def test_the_entry_point_registers_the_method_with_its_version(plugin):
    reg = get_method("firstword")
    assert reg.key == "firstword.v1" and get_method("firstword.v1") is reg
    assert "firstword" in registry.registered_methods()
    with pytest.raises(MethodError, match="has no version '2'"):
        get_method("firstword.v2")
    with pytest.raises(MethodError, match="unknown method 'firstwrd' \\(did you mean 'firstword'\\?\\)"):
        get_method("firstwrd")


def test_options_are_checked_by_name_and_type(plugin):
    reg = get_method("firstword")
    assert reg.parse_options({"label": "location"}).label == "location"
    with pytest.raises(MethodError, match="did you mean 'label'") as err:
        reg.parse_options({"labl": "x"})
    assert err.value.key == "method.options.labl"
    with pytest.raises(MethodError, match="expected str, got 3"):
        reg.parse_options({"label": 3})


def test_registrations_are_refused_when_they_cannot_mean_what_they_say():
    @dataclass
    class Opts:
        x: int = 1

    with pytest.raises(MethodError, match="built-in method's name"):
        register_method(MethodRegistration("el4ner", lambda c, o: None))
    with pytest.raises(MethodError, match="lowercase words"):
        register_method(MethodRegistration("My Method", lambda c, o: None))
    with pytest.raises(MethodError, match="must be a dataclass"):
        register_method(MethodRegistration("plain", lambda c, o: None, options=dict))
    assert register_method(MethodRegistration("opts", lambda c, o: None, options=Opts, version=2)).key == "opts.v2"
    registry._REGISTRY.pop("opts")


def test_a_registered_method_runs_through_openie_extract_and_resumes(plugin, records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = extract_file(records_file, out, method="firstword", method_options={"label": "person"},
                           engine=scripted(), schema=["person"], batch_size=4, show_progress=False)
    preds = read_jsonl(out)
    assert [[e.text for e in p.entities] for p in preds] == [["Ada"], ["Bob"], ["the"], ["Grace"], ["Alan"], ["a"]]
    assert summary.records == 6 and summary.prompts == 6 and summary.f1 == pytest.approx(0.8)  # P 4/6, R 4/4
    cfg = json.loads((tmp_path / "out.jsonl.run.json").read_text())["config"]
    assert cfg["method"] == "firstword" and cfg["method_options"] == {
        "method": "firstword.v1", "options": {"label": "person", "prefix": "First word of:"}}
    again = extract_file(records_file, out, method="firstword", method_options={"label": "person"},
                         engine=scripted(), schema=["person"], batch_size=4, show_progress=False)
    assert again.resumed == 6 and again.processed == 0
    with pytest.raises(ExtractError, match="method options.labl: unknown option"):
        extract_file(records_file, tmp_path / "bad.jsonl", method="firstword", method_options={"labl": "x"},
                     engine=scripted(), schema=["person"], show_progress=False)
    with pytest.raises(ExtractError, match="takes no demonstrations"):
        extract_file(records_file, tmp_path / "bad.jsonl", method="firstword", demonstrations=str(records_file),
                     engine=scripted(), schema=["person"], show_progress=False)


def test_openie_extract_and_a_grid_cell_give_the_same_prompts_and_predictions(plugin, tmp_path):
    cli_engine, cell_engine = scripted(), scripted()
    cli_out = tmp_path / "cli.jsonl"
    extract_file("wnut16:train", cli_out, method="firstword", method_options={"label": "person"}, engine=cli_engine,
                 limit=5, batch_size=5, show_progress=False)
    config = tmp_path / "exp.yaml"
    config.write_text(textwrap.dedent("""\
        name: plugin
        dataset: wnut16
        split: train
        limit: 5
        method: {name: firstword, batch_size: 5, options: {label: person}}
        engine: {backend: hf, model: scripted}
        """))
    [outcome] = run_experiment(config, tmp_path / "grid", engine_factory=lambda cfg, cache: cell_engine,
                               show_progress=False, log=lambda m: None)
    assert [c.prompt for c in cli_engine.calls] == [c.prompt for c in cell_engine.calls]
    assert [p.to_dict() for p in read_jsonl(cli_out)] == [p.to_dict() for p in read_jsonl(outcome.path /
                                                                                          "predictions.jsonl")]
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("{label: person}", "{lable: person}"))
    with pytest.raises(ConfigError, match="method.options.lable: unknown option of method 'firstword'") as err:
        run_experiment(bad, tmp_path / "bad", engine_factory=lambda cfg, cache: cell_engine, show_progress=False)
    assert err.value.line == 5


def test_the_cli_names_a_registered_method(plugin, records_file, tmp_path):
    res = CliRunner().invoke(app, ["extract", str(records_file), str(tmp_path / "o.jsonl"), "--labels", "person",
                                   "--method", "firstword", "--method-option", "labl=x", "--no-cache"])
    assert res.exit_code == 2 and "unknown option of method 'firstword' (did you mean 'label'?)" in res.output


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # Ray Data's own settings
def test_a_registered_method_runs_on_ray_workers(plugin, records_file, tmp_path):
    ray = pytest.importorskip("ray")
    import openie_firstword

    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join([str(plugin), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        factory = functools.partial(ScriptedEngine, openie_firstword.answer)
        local = extract_file(records_file, tmp_path / "local.jsonl", method="firstword", engine_factory=factory,
                             schema=["person"], batch_size=2, show_progress=False)
        remote = extract_file(records_file, tmp_path / "ray.jsonl", method="firstword", engine_factory=factory,
                              schema=["person"], batch_size=2, show_progress=False, ray_address="local",
                              ray_workers=2, ray_cpus_per_worker=0.5)
    finally:
        ray.shutdown()
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert remote.records == local.records == 6 and remote.prompts == local.prompts == 6


def test_gliner_is_a_built_in_registration_whose_name_is_reserved():
    reg = get_method("gliner")
    assert reg.key == "gliner.v1" and not reg.needs_engine and not reg.uses_template and reg.model_option == "model"
    assert "gliner" in registry.registered_methods()
    with pytest.raises(MethodError, match="built-in method's name"):
        register_method(MethodRegistration("gliner", lambda c, o: None))
    with pytest.raises(MethodError, match="labels: .*must be 'name' or 'description'|labels must be"):
        reg.parse_options({"model": "x/y", "labels": "both"})


def test_openie_method_fit_runs_a_registration_s_fit_and_refuses_a_method_without_one(tmp_path):
    config = tmp_path / "fit.yaml"
    config.write_text("steps: 2\n", encoding="utf-8")

    def fit(path, log):
        steps = int(path.read_text().split(":")[1])
        log(f"trained {steps} steps")
        report = path.parent / "report.md"
        report.write_text(f"{steps} steps\n", encoding="utf-8")
        return report

    register_method(MethodRegistration("fitted", lambda c, o: None, fit=fit))
    try:
        runner = CliRunner()
        out = runner.invoke(app, ["method", "fit", "fitted", str(config)])
        assert out.exit_code == 0, out.output
        assert "trained 2 steps" in out.output and (tmp_path / "report.md").read_text() == "2 steps\n"
        assert "fit: openie method fit" in runner.invoke(app, ["method", "list"]).output
        out = runner.invoke(app, ["method", "fit", "icl", str(config)])
        assert out.exit_code != 0 and "nothing to fit" in out.output
    finally:
        registry._REGISTRY.pop("fitted")
