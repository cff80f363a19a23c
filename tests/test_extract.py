from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from openie.cli import app
from openie.engines.cache import CachedEngine
from openie.engines.scripted import ScriptedEngine
from openie.errors import SchemaError
from openie.experiments.extract import (
    ConfigMismatchError,
    ExtractError,
    extract_file,
)
from openie.methods.icl import RandomDemonstrations
from openie.records import Entity, Record, read_jsonl, write_jsonl

runner = CliRunner()
NAMES = {"Ada": "person", "Bob": "person", "Grace": "person", "Alan": "person", "Paris": "location",
         "Rome": "location", "London": "location"}
FILLER = ["met", "in", "the", "visited", "and", "saw", "today", "with"]


def corpus(n: int, seed: int = 0) -> list[Record]:
    """Short sentences with gold person / location entities."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice([*NAMES, *FILLER]) for _ in range(rng.randint(3, 8))]
        text, ents, pos = " ".join(words), [], 0
        for w in words:
            if w in NAMES:
                ents.append(Entity(pos, pos + len(w), NAMES[w], w))
            pos += len(w) + 1
        out.append(Record(f"r{i}", text, entities=ents))
    return out


def tag_capitalised(request) -> str:
    """A scripted 'model': every capitalised word of the query is a person (Paris too: some errors)."""
    query = request.prompt.rsplit('Input: "', 1)[1].rsplit('"', 1)[0]
    return "; ".join(f"person: {w}" for w in query.split() if w[:1].isupper()) or "None"


class CountingEngine(ScriptedEngine):
    """Scripted engine that records the size of every generate call (batch alignment checks)."""

    def __init__(self, *args, fail_after: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []
        self.fail_after = fail_after

    def generate(self, requests):
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.batches.append(len(requests))
        return super().generate(requests)


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def run(inp, out, engine=None, **kw):
    kw.setdefault("schema", ["person", "location"])
    kw.setdefault("batch_size", 3)
    kw.setdefault("show_progress", False)
    return extract_file(inp, out, engine=engine or ScriptedEngine(tag_capitalised), **kw)


@pytest.fixture
def records_file(tmp_path) -> Path:
    path = tmp_path / "in.jsonl"
    write_jsonl(corpus(20), path)
    return path


# --------------------------------------------------------------------------------------------- basics

def test_zero_shot_output_is_ordered_grounded_and_summarised(records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = run(records_file, out)
    gold = read_jsonl(records_file)
    preds = read_jsonl(out)
    assert [p.id for p in preds] == [g.id for g in gold]
    for g, p in zip(gold, preds, strict=True):
        assert p.text == g.text and p.check_offsets() == []
        assert {e.text for e in p.entities} == {w for w in g.text.split() if w[:1].isupper()}
        assert all(e.label == "person" for e in p.entities)
        assert "parse_problems" in p.meta and p.meta["template"].startswith("ner.ruie.v1@")
    assert summary.records == summary.processed == 20 and summary.resumed == 0
    assert summary.entities == sum(len(p.entities) for p in preds)
    # persons are right, locations are mislabelled: precision = recall = persons / all
    persons = sum(1 for g in gold for e in g.entities if e.label == "person")
    total = sum(len(g.entities) for g in gold)
    assert summary.f1 == pytest.approx(persons / total)
    assert summary.cache_hits is None and summary.records_per_s > 0
    side = json.loads((out.parent / "out.jsonl.run.json").read_text())
    assert side["status"] == "complete" and side["summary"]["records"] == 20
    cfg = side["config"]
    assert cfg["template"].startswith("ner.ruie.v1@") and cfg["max_tokens"] == 128 and cfg["demonstrations"] is None
    assert cfg["schema"] == {"entities": [{"name": "person"}, {"name": "location"}]}
    assert "extracted 20 records" in str(summary) and "strict micro F1" in str(summary)


def test_the_model_never_sees_gold(records_file, tmp_path):
    engine = ScriptedEngine(tag_capitalised)
    run(records_file, tmp_path / "out.jsonl", engine=engine)
    assert all("person: " not in r.prompt.rsplit('Input: "', 1)[1] for r in engine.calls)


def test_dataset_input_brings_its_schema_and_limit_stops_early(tmp_path):
    summary = run("wnut16:train", tmp_path / "out.jsonl", schema=None, limit=5)
    assert summary.records == 5 and summary.input_records > 1000 and summary.f1 is not None
    cfg = json.loads((tmp_path / "out.jsonl.run.json").read_text())["config"]
    assert cfg["input"] == "wnut16:train" and "person" in [e["name"] for e in cfg["schema"]["entities"]]
    summary = run("wnut16:train", tmp_path / "out.jsonl", schema=None, limit=8)  # extends the same output
    assert summary.resumed == 5 and summary.records == 8
    assert [p.id for p in read_jsonl(tmp_path / "out.jsonl")] == [f"wnut16-train-{i}" for i in range(8)]


# --------------------------------------------------------------------------------------------- resume

def test_resume_after_a_crash_and_a_partial_line_equals_an_uninterrupted_run(records_file, tmp_path):
    ref = tmp_path / "ref.jsonl"
    run(records_file, ref)
    out = tmp_path / "out.jsonl"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(records_file, out, engine=CountingEngine(tag_capitalised, fail_after=3))
    assert len(lines(out)) == 9  # three batches of three were written before the crash
    with open(out, "a", encoding="utf-8") as fh:  # and a write cut by SIGKILL
        fh.write(lines(ref)[9][:25])
    engine = CountingEngine(tag_capitalised)
    summary = run(records_file, out, engine=engine)
    assert out.read_bytes() == ref.read_bytes()
    assert summary.resumed == 9 and summary.processed == 11 and summary.records == 20
    assert engine.batches == [3, 3, 3, 2]  # only the missing records were sent
    ref_summary = json.loads((tmp_path / "ref.jsonl.run.json").read_text())["summary"]
    for key in ("entities", "parse_problems", "not_found", "f1", "records"):
        assert getattr(summary, key) == ref_summary[key]
    # a finished output resumes to itself without calling the model
    engine = CountingEngine(tag_capitalised)
    assert run(records_file, out, engine=engine).processed == 0 and engine.batches == []


def test_resumed_batches_stay_aligned_with_an_uninterrupted_run(records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    run(records_file, out, limit=4)  # a prefix that ends inside a batch of 3
    engine = CountingEngine(tag_capitalised)
    run(records_file, out, engine=engine)
    assert engine.batches == [2, 3, 3, 3, 3, 2]  # 4-5, then 6-8, 9-11, ... as an uninterrupted run


def test_resume_with_another_configuration_is_refused_naming_the_keys(records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    run(records_file, out, limit=6)
    with pytest.raises(ConfigMismatchError) as err:
        run(records_file, out, max_tokens=64, template="ner.json.v1")
    assert set(err.value.differing) == {"max_tokens", "template"}
    assert "max_tokens" in str(err.value) and "template" in str(err.value) and "--overwrite" in str(err.value)
    with pytest.raises(ConfigMismatchError, match="schema"):
        run(records_file, out, schema=["person"])
    assert len(lines(out)) == 6  # untouched
    summary = run(records_file, out, max_tokens=64, overwrite=True)
    assert summary.resumed == 0 and summary.records == 20
    assert json.loads((tmp_path / "out.jsonl.run.json").read_text())["config"]["max_tokens"] == 64


def test_outputs_of_unknown_origin_are_never_appended_to(records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "x", "text": "t"}\n')
    with pytest.raises(ExtractError, match="run.json"):
        run(records_file, out)
    other = tmp_path / "other.jsonl"
    write_jsonl([Record("zzz", "Ada here .")] + corpus(3), other)
    run(other, out, overwrite=True, limit=2)
    (tmp_path / "out.jsonl.run.json").write_text(
        (tmp_path / "out.jsonl.run.json").read_text().replace(str(other.resolve()), str(records_file.resolve())))
    with pytest.raises(ExtractError, match="not written from this input"):
        run(records_file, out)


# --------------------------------------------------------------------------------------------- bad input

def test_malformed_lines_go_to_the_errors_file_and_the_run_continues(tmp_path):
    good = corpus(4)
    raw = [json.dumps(good[0].to_dict()), "{not json", json.dumps({"id": "no-text"}), "",
           json.dumps(good[1].to_dict()), json.dumps(good[1].to_dict()),
           json.dumps({"id": "off", "text": "Ada", "entities": [{"start": 0, "end": 2, "label": "person", "text": "Ada"}]}),
           json.dumps(good[2].to_dict())]
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(("\n".join(raw) + "\n").encode() + b'{"id": "latin", "text": "caf\xe9"}\n'
                    + (json.dumps(good[3].to_dict()) + "\n").encode())
    out = tmp_path / "out.jsonl"
    summary = run(inp, out)
    assert [p.id for p in read_jsonl(out)] == ["r0", "r1", "r2", "r3"]
    errors = [json.loads(line) for line in lines(tmp_path / "out.jsonl.errors.jsonl")]
    assert [e["line"] for e in errors] == [2, 3, 6, 7, 9]
    reasons = [e["reason"] for e in errors]
    assert "invalid JSON" in reasons[0] and "missing field(s) text" in reasons[1]
    assert "duplicate record id 'r1' (first on line 5)" in reasons[2] and "'Ad'" in reasons[3]
    assert "not UTF-8" in reasons[4] and errors[0]["raw"] == "{not json"
    assert summary.malformed_lines == 5 and "malformed input lines 5" in str(summary)
    # resuming re-reads the input: the errors file is rewritten, not appended to
    run(inp, out)
    assert len(lines(tmp_path / "out.jsonl.errors.jsonl")) == 5


def test_schema_problems_are_clear_errors(records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(SchemaError, match="--schema FILE.*--labels"):
        run(records_file, out, schema=None)
    with pytest.raises(SchemaError, match=r"none of the input's gold entity labels \(location, person\) is in the "
                                          r"schema \(PER, LOC\)"):
        run(records_file, out, schema=["PER", "LOC"])
    with pytest.raises(SchemaError, match="does not exist"):
        run(records_file, out, schema=tmp_path / "nope.json")
    with pytest.raises(SchemaError, match="non-empty"):
        run(records_file, out, schema=["person", ""])
    with pytest.raises(ExtractError, match="neither an existing file nor a registered corpus"):
        run(tmp_path / "missing.jsonl", out)
    with pytest.raises(ExtractError, match="adapter 'ner' is not among"):
        extract_file(records_file, out, schema=["person"], adapter="ner", show_progress=False)
    # a schema covering part of the gold: scored on its labels, the rest reported
    summary = run(records_file, out, schema=["person"], overwrite=True)
    assert summary.recall == 1.0 and summary.precision < 1.0  # locations tagged as persons are false positives
    assert set(summary.gold_labels_outside_schema) == {"location"} and "location (" in str(summary)


def test_cli_errors_exit_2_with_a_message(records_file, tmp_path):
    out = str(tmp_path / "out.jsonl")
    res = runner.invoke(app, ["extract", str(records_file), out, "--no-progress"])
    assert res.exit_code == 2 and "no schema" in res.output and "--labels" in res.output
    res = runner.invoke(app, ["extract", str(records_file), out, "--labels", "PER,LOC", "--no-cache"])
    assert res.exit_code == 2 and "none of the input's gold entity labels" in res.output
    res = runner.invoke(app, ["extract", str(records_file), out, "--labels", "person", "--adapter", "x"])
    assert res.exit_code == 2 and "NAME=PATH" in res.output
    res = runner.invoke(app, ["extract", str(records_file), out, "--labels", "person", "--schema", "s.json"])
    assert res.exit_code == 2 and "not both" in res.output


# --------------------------------------------------------------------------------------------- few-shot, cache

def test_few_shot_demonstrations_are_seeded_per_record(records_file, tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(corpus(30, seed=1), pool)
    sel = RandomDemonstrations(read_jsonl(pool), k=3, seed=7)
    rec = Record("r5", "Ada met Bob")
    assert [d.id for d in sel(rec)] == [d.id for d in sel(rec)] and len(sel(rec)) == 3
    assert [d.id for d in RandomDemonstrations(read_jsonl(pool), 3, seed=8)(rec)] != [d.id for d in sel(rec)]
    assert all(d.id != "r1" for d in sel(Record("r1", "whatever")))  # never its own demonstration

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    engine = ScriptedEngine(tag_capitalised)
    run(records_file, a, engine=engine, demonstrations=str(pool), k=3, seed=7)
    run(records_file, b, demonstrations=str(pool), k=3, seed=7, batch_size=7)
    assert a.read_bytes() == b.read_bytes()  # independent of batching
    preds = read_jsonl(a)
    assert all(len(p.meta["demo_ids"]) == 3 for p in preds)
    demo_text = next(r.text for r in read_jsonl(pool) if r.id == preds[0].meta["demo_ids"][-1])
    assert demo_text in engine.calls[0].prompt
    cfg = json.loads((tmp_path / "a.jsonl.run.json").read_text())["config"]["demonstrations"]
    assert cfg["k"] == 3 and cfg["seed"] == 7 and len(cfg["pool_sha256"]) == 64 and cfg["pool_size"] == 30
    with pytest.raises(ConfigMismatchError, match="demonstrations"):
        run(records_file, a, demonstrations=str(pool), k=3, seed=8)


def test_cache_hits_and_misses_are_reported(records_file, tmp_path):
    engine = CachedEngine(ScriptedEngine(tag_capitalised), tmp_path / "cache.sqlite")
    cold = run(records_file, tmp_path / "a.jsonl", engine=engine)
    warm = run(records_file, tmp_path / "a.jsonl", engine=engine, overwrite=True)
    assert (cold.cache_hits, cold.cache_misses) == (0, 20) and (warm.cache_hits, warm.cache_misses) == (20, 0)
    assert "cache: 20 hits, 0 misses" in str(warm)
    wrapped = run(records_file, tmp_path / "b.jsonl", cache=tmp_path / "cache.sqlite")  # cache= wraps an engine
    assert (wrapped.cache_hits, wrapped.cache_misses) == (20, 0)


# --------------------------------------------------------------------------------------------- the real path

TINY_ARGS = ["--labels", "person,location", "--batch-size", "2", "--max-tokens", "6", "--no-cache", "--no-progress"]


def test_tiny_model_end_to_end_through_the_cli_and_resume(tiny_decoder_path, records_file, tmp_path):
    """transformers backend on a tiny random model: garbage outputs, but the pipeline and resume are real."""
    out = tmp_path / "out.jsonl"
    args = ["extract", str(records_file), str(out), "--backend", "hf", "--model", str(tiny_decoder_path), *TINY_ARGS]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "extracted 20 records" in res.output and "tokens/s" in res.output
    full = out.read_bytes()
    preds = read_jsonl(out)
    assert [p.id for p in preds] == [f"r{i}" for i in range(20)]
    assert all(p.check_offsets() == [] and "alignment" in p.meta for p in preds)
    cfg = json.loads((tmp_path / "out.jsonl.run.json").read_text())["config"]
    assert cfg["backend"] == "hf" and cfg["model"] == str(tiny_decoder_path.resolve())
    # cut inside line 13, resume: the same bytes
    cut = len(b"".join(full.splitlines(keepends=True)[:12])) + 17
    out.write_bytes(full[:cut])
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "12 resumed, 8 new" in res.output and out.read_bytes() == full


def _run_cli(argv: list[str], log: str) -> None:
    """Body of a forked ``openie`` process (the console script's ``main`` with these arguments)."""
    from openie.cli import main

    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.argv = ["openie", *argv]
    main()


def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_run(tiny_decoder_path, tmp_path, monkeypatch):
    """``openie extract`` killed with SIGKILL >= 20 times at seeded random points, resumed each time.

    The uninterrupted reference runs as a plain subprocess (``python -m openie.cli``). Killed runs
    are processes forked from a forkserver that has imported torch and transformers once: a
    fresh interpreter pays ~10 s of imports on these machines, which 20+ restarts cannot afford;
    each forked process then runs the real CLI (argument parsing, model loading, resume).
    """
    inp = tmp_path / "in.jsonl"
    write_jsonl(corpus(40, seed=3), inp)
    for key, value in {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1"}.items():
        monkeypatch.setenv(key, value)
    common = ["--backend", "hf", "--model", str(tiny_decoder_path), *TINY_ARGS]
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    t0 = time.perf_counter()
    reference = subprocess.Popen([sys.executable, "-m", "openie.cli", "extract", str(inp), str(ref), *common],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["openie.cli", "openie.experiments.extract", "openie.engines.hf"])
    rng = random.Random(20240501)
    argv = ["extract", str(inp), str(out), *common]
    log = tmp_path / "runs.log"
    kills, rounds, cut_lines = 0, 0, []
    while kills < 20:
        rounds += 1
        for path in (out, tmp_path / "out.jsonl.run.json"):
            path.unlink(missing_ok=True)
        while True:
            before = out.stat().st_size if out.exists() else 0
            proc = ctx.Process(target=_run_cli, args=(argv, str(log)))
            proc.start()
            started = time.monotonic()
            if rng.random() < 0.25:  # anywhere: start-up, model loading, the input scan, the resume check
                proc.join(rng.uniform(0.0, 0.8))
            else:  # once this run has written something: mid-generation, mid-write, mid-fsync
                while proc.is_alive() and (out.stat().st_size if out.exists() else 0) <= before:
                    assert time.monotonic() - started < 60, "no progress"
                    time.sleep(0.005)
                proc.join(rng.uniform(0.0, 0.15))
            if not proc.is_alive():
                proc.join()
                assert proc.exitcode == 0, f"extract exited with {proc.exitcode}: {log.read_text()[-2000:]}"
                break
            os.kill(proc.pid, signal.SIGKILL)
            proc.join()
            if proc.exitcode == 0:  # it finished between the check and the signal
                break
            assert proc.exitcode == -signal.SIGKILL
            kills += 1
            cut_lines.append(out.read_bytes().count(b"\n") if out.exists() else 0)
        if rounds == 1:
            assert reference.wait(120) == 0, reference.stdout.read().decode()
        got, want = lines(out), lines(ref)
        assert len(got) == len(want) == 40
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"record {i} differs after {kills} kills"
    print(f"{kills} SIGKILLs over {rounds} rounds in {time.perf_counter() - t0:.1f} s; lines at kill: {cut_lines}")
    assert len(set(cut_lines)) > 5  # the kills landed at many different points


def test_retrieved_demonstrations_are_recorded_and_change_the_configuration(records_file, tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(corpus(30, seed=1), pool)
    out = tmp_path / "bm25.jsonl"
    engine = ScriptedEngine(tag_capitalised)
    run(records_file, out, engine=engine, demonstrations=str(pool), k=2, retriever="bm25")
    cfg = json.loads((tmp_path / "bm25.jsonl.run.json").read_text())["config"]["demonstrations"]
    assert cfg["selector"] == "bm25" and cfg["k"] == 2 and cfg["pool"] == [str(pool.resolve())]
    from retrievers import BM25Retriever

    bm25 = BM25Retriever()
    bm25.index(read_jsonl(pool))
    for pred, gold in zip(read_jsonl(out), read_jsonl(records_file), strict=True):
        assert pred.meta["demo_ids"] == [r.id for r, _ in bm25.retrieve(gold.without_annotations(), 2)]
    with pytest.raises(ConfigMismatchError, match="demonstrations"):
        run(records_file, out, demonstrations=str(pool), k=2, retriever="bm25s")
    with pytest.raises(ExtractError, match="strategy 'ruie' needs path="):
        run(records_file, tmp_path / "r.jsonl", retriever="ruie")
    with pytest.raises(ExtractError, match="needs path="):
        run(records_file, tmp_path / "s.jsonl", demonstrations=str(pool), retriever="saved")


# --------------------------------------------------------------------------------------------- BANER

def markers_for_type(request) -> str:
    """A scripted BANER detector: the capitalised words of the sentence for the prompt's type."""
    label = request.prompt.split("entity of ", 1)[1].split(" ", 1)[0]
    sentence = request.prompt.split("Sentence: ", 1)[1].split("\n", 1)[0]
    return " ".join(f"<<< {w} >>>" for w in sentence.split() if NAMES.get(w) == label)


def test_baner_method_sends_constrained_per_type_prompts_and_resumes(records_file, tmp_path):
    engine = ScriptedEngine(markers_for_type)
    out = tmp_path / "baner.jsonl"
    summary = run(records_file, out, engine=engine, method="baner", adapter="det",
                  method_options={"constrained": True})
    assert summary.records == 20 and summary.f1 == 1.0 and summary.records_without_coverage == 0
    assert summary.coverage["prompts"] == 40 and summary.incomplete_records == 0
    assert len(engine.calls) == 40 and all(c.allowed_texts and c.adapter == "det" for c in engine.calls)
    config = json.loads(out.with_name(out.name + ".run.json").read_text())["config"]
    assert config["method"] == "baner" and config["template"].startswith("ner.baner.v1@")
    assert config["method_options"] == {"method": "baner.v1", "options": {
        "descriptions": False, "constrained": True, "support": None, "k": 5, "seed": 0, "typing_encoder": "llm",
        "typing_layer": None, "max_tokens": 48}}
    with pytest.raises(ConfigMismatchError, match="method_options"):
        run(records_file, out, engine=engine, method="baner", adapter="det", method_options={"constrained": False})
    with pytest.raises(ExtractError, match="unknown option of method 'baner'"):
        run(records_file, tmp_path / "x.jsonl", engine=engine, method="baner", method_options={"beams": 3})


def el4ner_answers(request) -> str:
    """Scripted EL4NER member: spans are the capitalised words, each typed by the NAMES table."""
    last = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in request.prompt.splitlines() if ": " in line}
    if request.template.startswith("ner.el4ner-spans"):
        return json.dumps([w for w in last["Text"].split() if w[:1].isupper()])
    return NAMES[last["Mention"]]


def test_el4ner_method_runs_every_member_records_them_and_resumes(records_file, tmp_path):
    engine = ScriptedEngine(el4ner_answers, scores=lambda r: -0.1 if r.continuation == " true" else -2.0)
    out = tmp_path / "el4ner.jsonl"
    options = {"members": [{"name": "a"}, {"name": "b", "adapter": "second"}], "demonstrations": "none",
               "typing": "generate"}
    summary = run(records_file, out, engine=engine, method="el4ner", method_options=options,
                  demonstrations="pool:train", k=3)
    assert summary.records == 20 and summary.f1 == 1.0
    adapters = {c.adapter for c in engine.calls if c.template.startswith("ner.el4ner-spans")}
    assert adapters == {None, "second"}  # both members proposed spans
    config = json.loads(out.with_name(out.name + ".run.json").read_text())["config"]
    recorded = config["method_options"]["options"]
    assert config["method"] == "el4ner" and config["method_options"]["method"] == "el4ner.v1"
    assert [t.split("@")[0] for t in recorded["templates"]] == [
        "ner.el4ner-spans.v1", "ner.el4ner-type.v1", "ner.el4ner-verify.v1"]
    assert recorded["pool"] == "pool:train" and recorded["k"] == 3  # --demos, --k
    assert [m["name"] for m in recorded["members"]] == ["a", "b"]
    assert read_jsonl(out)[0].meta["el4ner"]["verification"]["member"] == "a"
    assert summary.records_without_coverage == 0 and read_jsonl(out)[0].meta["coverage"]["chars_not_seen"] == 0
    with pytest.raises(ConfigMismatchError, match="method_options"):
        run(records_file, out, engine=engine, method="el4ner", method_options={**options, "verify": False},
            demonstrations="pool:train", k=3)
    with pytest.raises(ExtractError, match="unknown EL4NER options"):
        run(records_file, tmp_path / "x.jsonl", engine=engine, method="el4ner", method_options={"beams": 3})
    with pytest.raises(ExtractError, match="picks its own demonstrations"):
        run(records_file, tmp_path / "y.jsonl", engine=engine, method="el4ner", retriever="bm25",
            demonstrations="pool:train")


# --------------------------------------------------------------------------------------------- DSPy

def dspy_answer(request) -> str:
    """Scripted DSPy ChatAdapter answers: the NAMES of the prompt's last ``text`` input."""
    text = request.prompt.rsplit("[[ ## text ## ]]\n", 1)[1].split("\n\n", 1)[0]
    entities = [{"text": w, "type": NAMES[w]} for w in text.split() if w in NAMES]
    return f"[[ ## entities ## ]]\n{json.dumps(entities)}\n\n[[ ## completed ## ]]"


def test_dspy_method_runs_a_knn_program_records_its_options_and_resumes(records_file, tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(corpus(30, seed=1), pool)
    engine = ScriptedEngine(dspy_answer)
    out = tmp_path / "dspy.jsonl"
    summary = run(records_file, out, engine=engine, method="dspy", method_options={"dspy_adapter": "chat_only"},
                  demonstrations=str(pool), k=2, max_tokens=256)
    assert summary.records == 20 and summary.f1 == 1.0 and summary.prompts == 20
    assert all("[[ ## text ## ]]" in c.prompt and c.max_tokens == 256 for c in engine.calls)
    config = json.loads(out.with_name(out.name + ".run.json").read_text())["config"]
    assert config["method"] == "dspy" and config["template"] is None and config["task"] == "ner"
    options = config["method_options"]["options"]
    assert (options["program"], options["knn_k"], options["dspy_adapter"], options["pool"]) == (
        "predict", 2, "chat_only", [str(pool.resolve())])
    assert options["fingerprints"]["dspy"] and options["tools"] == []
    from retrievers import BM25Retriever

    bm25 = BM25Retriever()
    bm25.index(read_jsonl(pool))
    for pred, gold in zip(read_jsonl(out), read_jsonl(records_file), strict=True):
        assert pred.meta["demo_ids"] == [r.id for r, _ in bm25.retrieve(gold.text, 2)]
    again = run(records_file, out, engine=engine, method="dspy", method_options={"dspy_adapter": "chat_only"},
                demonstrations=str(pool), k=2, max_tokens=256)
    assert again.resumed == 20 and again.processed == 0
    with pytest.raises(ConfigMismatchError, match="method_options"):
        run(records_file, out, engine=engine, method="dspy", method_options={"program": "chain_of_thought"},
            demonstrations=str(pool), k=2, max_tokens=256)
    with pytest.raises(ExtractError, match="unknown DSPy options"):
        run(records_file, tmp_path / "x.jsonl", engine=engine, method="dspy", method_options={"beams": 3})


def test_dspy_method_compiles_an_optimised_program_next_to_the_output(records_file, tmp_path):
    pool = tmp_path / "pool.jsonl"
    write_jsonl(corpus(30, seed=1), pool)
    engine = ScriptedEngine(dspy_answer)
    out = tmp_path / "opt.jsonl"
    options = {"dspy_adapter": "chat_only", "optimize": {"n_train": 6, "max_labeled_demos": 2,
                                                          "max_bootstrapped_demos": 2}}
    summary = run(records_file, out, engine=engine, method="dspy", method_options=options, demonstrations=str(pool),
                  k=0, max_tokens=256)
    report = json.loads((tmp_path / "opt.jsonl.dspy" / "compiled_program" / "openie_compile.json").read_text())
    assert summary.f1 == 1.0 and report["lm_calls"] >= 2 and report["demos"] == {"self": 2}
    assert len(engine.calls) == report["lm_calls"] + 20  # compiling, then one call per record
    assert all(c.prompt.count("[[ ## text ## ]]") == 4 for c in engine.calls[-20:])  # 2 demos, the input, the format
    config = json.loads(out.with_name(out.name + ".run.json").read_text())["config"]
    assert config["method_options"]["options"]["optimize"]["train"] == [str(pool.resolve())]


# --------------------------------------------------------------------------------------------- raw I/O, dtype

def test_save_io_keeps_prompts_answers_and_cut_answers_beside_the_predictions(records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    rambling = ScriptedEngine(lambda r: "person: Ada; " * 5 if "Ada" in r.prompt.rsplit("Input:", 1)[1] else "None")
    summary = run(records_file, out, engine=rambling, save_io=True, max_tokens=4)
    preds, io = read_jsonl(out), [json.loads(x) for x in lines(tmp_path / "out.jsonl.io.jsonl")]
    assert [x["id"] for x in io] == [p.id for p in preds] and all("io" not in p.meta for p in preds)
    cut = [p for p in preds if "Ada" in p.text]
    assert cut and all(p.meta["cut_at_max_tokens"] == 1 for p in cut)
    assert all(p.meta["cut_at_max_tokens"] == 0 for p in preds if "Ada" not in p.text)
    assert summary.cut_at_max_tokens == len(cut) and f"answers cut at max_tokens {len(cut)}" in str(summary)
    first = io[0]["io"][0]
    assert first["prompt"] == rambling.calls[0].prompt and first["answer"] in ("None", "person: Ada; person: Ada;")
    assert {x["io"][0]["finish_reason"] for x in io} == {"stop", "length"}
    # a resumed run cuts the io file back to the predictions it keeps, then appends
    out.write_text("".join(x + "\n" for x in lines(out)[:7]))
    run(records_file, out, engine=rambling, save_io=True, max_tokens=4)
    assert [json.loads(x)["id"] for x in lines(tmp_path / "out.jsonl.io.jsonl")] == [p.id for p in preds]


def test_the_resolved_dtype_is_recorded_and_a_change_refuses_to_resume(records_file, tmp_path):
    out = tmp_path / "out.jsonl"

    class Float32(ScriptedEngine):
        dtype = "float32"

    run(records_file, out, engine=Float32(tag_capitalised))
    assert json.loads((tmp_path / "out.jsonl.run.json").read_text())["config"]["dtype"] == "float32"

    class BFloat16(ScriptedEngine):
        dtype = "bfloat16"

    with pytest.raises(ConfigMismatchError, match="dtype"):
        run(records_file, out, engine=BFloat16(tag_capitalised))


def test_engine_options_and_dtype_are_checked_before_any_work(records_file, tmp_path):
    out = str(tmp_path / "out.jsonl")
    base = ["extract", str(records_file), out, "--labels", "person", "--backend", "hf", "--no-cache", "--no-progress"]
    res = runner.invoke(app, [*base, "--engine-option", "batchsize=4"])
    assert res.exit_code == 2 and "'batchsize' (did you mean 'batch_size'?)" in res.output
    res = runner.invoke(app, [*base, "--engine-option", "dtype=float32"])
    assert res.exit_code == 2 and "--dtype" in res.output
    res = runner.invoke(app, [*base, "--dtype", "float8"])
    assert res.exit_code == 2 and "unknown dtype 'float8'" in res.output
    res = runner.invoke(app, [*base, "--engine-option", "batch_size"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    assert not Path(out).exists()


def test_dtype_and_engine_options_reach_the_engine_and_the_run_record(tiny_decoder_path, records_file, tmp_path):
    out = tmp_path / "out.jsonl"
    args = ["extract", str(records_file), str(out), "--backend", "hf", "--model", str(tiny_decoder_path), *TINY_ARGS,
            "--dtype", "bfloat16", "--engine-option", "batch_size=5", "--limit", "4"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "out.jsonl.run.json").read_text())["config"]
    assert cfg["dtype"] == "bfloat16" and cfg["engine_options"] == {"batch_size": 5}
    res = runner.invoke(app, [*args[:-6], "--dtype", "float32", "--engine-option", "batch_size=5", "--limit", "4"])
    assert res.exit_code == 2 and "differing keys: dtype" in res.output


def test_a_pool_from_another_corpus_builds_the_same_prompts_as_in_a_grid_cell(tmp_path):
    """One --demos pool of another corpus is shown with that corpus's own labels, exactly as a grid cell
    shows it (the single-pool path used to render it under the query's labels)."""
    import textwrap

    from openie.experiments.run import run_experiment

    extract_engine = ScriptedEngine(lambda r: "None")
    run("wnut16:train", tmp_path / "out.jsonl", engine=extract_engine, schema=None, limit=4, batch_size=4,
        demonstrations="conll2003_sample:train", k=2, seed=3)
    config = tmp_path / "exp.yaml"
    config.write_text(textwrap.dedent("""\
        name: parity
        dataset: wnut16
        split: train
        limit: 4
        method: {template: ner.ruie.v1, max_tokens: 128, batch_size: 4}
        engine: {backend: hf, model: scripted}
        demonstrations: {strategy: random, pool: conll2003_sample:train, k: 2, seed: 3}
        """))
    cell_engine = ScriptedEngine(lambda r: "None")
    run_experiment(config, tmp_path / "grid", engine_factory=lambda cfg, cache: cell_engine, show_progress=False,
                   log=lambda m: None)
    extract_prompts = [c.prompt for c in extract_engine.calls]
    assert extract_prompts == [c.prompt for c in cell_engine.calls] and len(extract_prompts) == 4
    assert "Schema: ['person', 'location', 'organization', 'misc']" in extract_prompts[0]  # the pool's own labels


# --------------------------------------------------------------------------------------------- hard inputs

HARD_LABELS = [f"type{i:02d}" for i in range(60)]
ZH = "北京大学的研究人员今天在上海发布了一项关于人工智能的新报告。"
TH = "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทยและเป็นศูนย์กลางทางเศรษฐกิจ"


def hard_inputs(path: Path, english_chars: int, chinese_chars: int) -> dict[str, str]:
    """Records no peer survives whole: a long English document, a long Chinese one (no spaces), Thai,
    mixed scripts with emoji, emoji alone, an empty text, one whose answer runs past the limit, and a
    line that is not UTF-8."""
    sentence = "Maria Schmidt flew from Berlin to Toronto for the Acme Corporation meeting . "
    texts = {"en-long": (sentence * (english_chars // len(sentence) + 1))[:english_chars].rsplit(" ", 1)[0],
             "zh-long": (ZH * (chinese_chars // len(ZH) + 1))[:chinese_chars],
             "th": TH * 3, "mixed": "Tokyo 東京 meets Bangkok กรุงเทพ 🚀 and Zürich ñandú 😀 naïve café",
             "emoji": "😀🚀🎉 🇩🇪👩‍👩‍👧", "empty": "", "cut": "LONGANSWER " + "Paris is big . " * 5}
    with open(path, "wb") as fh:
        for rid, text in texts.items():
            fh.write((json.dumps({"id": rid, "text": text}, ensure_ascii=False) + "\n").encode("utf-8"))
            if rid == "th":
                fh.write(b'{"id": "latin1", "text": "caf\xe9"}\n')  # not UTF-8: reported, never fatal
    return texts


def first_word_answer(request) -> str:
    """The first word (or two characters of a script without spaces) of the prompt's input, typed with
    the first label shown; a very long answer for the record that asks for one."""
    prompt = request.prompt
    text = prompt.rsplit('Input: "', 1)[1].rsplit('"\nOutput:', 1)[0]
    label = prompt.rsplit("Schema: ['", 1)[1].split("'", 1)[0]
    if "LONGANSWER" in text:
        return "; ".join(f"{label}: Paris" for _ in range(40))
    word = next(iter(text.split()), "")
    if word and ord(word[0]) > 0x2E80:
        word = word[:2]
    return f"{label}: {word}" if word and word[0] not in "😀🚀🎉🇩👩" else "None"


def test_hard_inputs_come_back_whole_with_every_loss_counted(tmp_path):
    inputs = tmp_path / "hard.jsonl"
    texts = hard_inputs(inputs, english_chars=1_000_000, chinese_chars=200_000)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"entities": [{"name": n} for n in HARD_LABELS]}), encoding="utf-8")
    engine = ScriptedEngine(first_word_answer)
    out = tmp_path / "hard-out.jsonl"
    summary = extract_file(inputs, out, engine=engine, schema=str(schema), max_tokens=20, batch_size=4,
                           show_progress=False, save_io=True)
    preds = {p.id: p for p in read_jsonl(out)}
    assert list(preds) == list(texts) and summary.malformed_lines == 1 and summary.records == len(texts)
    errors = [json.loads(line) for line in (tmp_path / "hard-out.jsonl.errors.jsonl").read_text().splitlines()]
    assert errors[0]["line"] == 4 and "not UTF-8" in errors[0]["reason"]
    for rid, p in preds.items():
        c = p.meta["coverage"]
        assert c["chars"] == len(texts[rid]) and c["chars_not_seen"] == 0, rid  # the model saw every character
        assert c["labels_per_prompt"] == 20 and c["prompts"] == 3 * c["chunks"], rid  # 60 types: 3 prompts of 20
        assert p.check_offsets() == [], rid
    assert preds["en-long"].meta["coverage"]["chunks"] > 100 and preds["zh-long"].meta["coverage"]["chunks"] > 100
    io = {json.loads(line)["id"]: json.loads(line)["io"] for line in (tmp_path / "hard-out.jsonl.io.jsonl").open()}
    longest = max(len(e["prompt"].rsplit('Input: "', 1)[1].rsplit('"\nOutput:', 1)[0]) for e in io["zh-long"])
    assert longest <= 256  # characters of a script without spaces are the budget's units
    zh = preds["zh-long"].entities
    assert zh and all(e.text == texts["zh-long"][e.start:e.end] for e in zh)
    cut = preds["cut"].meta["coverage"]
    assert cut["cut_at_max_tokens"] == 3 and cut["salvaged"] == 3 and not cut["complete"]
    assert {e.text for e in preds["cut"].entities} == {"Paris"}  # the complete items; the last, maybe unfinished, dropped
    assert summary.incomplete_records >= 1 and summary.coverage["chars_not_seen"] == 0
    assert summary.coverage["chars"] == sum(len(t) for t in texts.values())
    assert preds["empty"].entities == [] and preds["emoji"].meta["coverage"]["complete"]

    strict = tmp_path / "strict.jsonl"
    with pytest.raises(ExtractError, match="record 'cut': coverage lost .*cut_at_max_tokens 3"):
        extract_file(inputs, strict, engine=engine, schema=str(schema), max_tokens=20, batch_size=1,
                     show_progress=False, strict_coverage=True, limit=None)
    assert [p.id for p in read_jsonl(strict)][-1] == "cut"  # written, then the run stopped


def test_hard_inputs_through_a_tiny_model_fit_its_context(tiny_decoder_path, tmp_path):
    """The same records through a real tokenizer and a 512-position model: chunks are measured in its
    tokens and every prompt fits the context next to the answer."""
    from transformers import AutoTokenizer

    inputs = tmp_path / "hard.jsonl"
    texts = hard_inputs(inputs, english_chars=20_000, chinese_chars=5_000)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"entities": [{"name": n} for n in HARD_LABELS]}), encoding="utf-8")
    out = tmp_path / "tiny.jsonl"
    summary = extract_file(inputs, out, schema=str(schema), backend="hf", model=str(tiny_decoder_path),
                           engine_options={"device": "cpu"}, max_tokens=4, batch_size=8, show_progress=False,
                           save_io=True)
    preds = {p.id: p for p in read_jsonl(out)}
    assert list(preds) == list(texts) and summary.malformed_lines == 1
    assert all(p.meta["coverage"]["chars_not_seen"] == 0 and p.check_offsets() == [] for p in preds.values())
    assert preds["zh-long"].meta["coverage"]["chunks"] > 1 and preds["en-long"].meta["coverage"]["chunks"] > 1
    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_path)
    io = [e for line in (tmp_path / "tiny.jsonl.io.jsonl").open() for e in json.loads(line)["io"]]
    assert max(len(tokenizer.encode(e["prompt"])) + 4 for e in io) <= 512
    assert summary.coverage["tokens"] > 0 and summary.coverage["prompts"] == len(io)
