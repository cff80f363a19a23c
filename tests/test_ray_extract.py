from __future__ import annotations

import functools
import json

import pytest

from openie.engines.scripted import ScriptedEngine
from openie.experiments.extract import extract_file
from openie.records import Entity, Record, read_jsonl, write_jsonl

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own context settings

RAY = dict(ray_address="local", ray_workers=2, ray_cpus_per_worker=0.5)


def _corpus(n: int) -> list[Record]:
    names = ["Ada", "Bob", "Paris", "Grace", "Rome"]
    out = []
    for i in range(n):
        name = names[i % len(names)]
        out.append(Record(f"r{i}", f"{name} met friend {i} in town",
                          entities=[Entity(0, len(name), "person", name)]))
    return out


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def input_file(tmp_path):
    inp = tmp_path / "in.jsonl"
    write_jsonl(_corpus(24), inp)
    with open(inp, "a") as fh:
        fh.write("{broken\n")
    return inp


def test_ray_extraction_equals_the_local_run(tiny_decoder_path, input_file, tmp_path, local_ray):
    """Two Ray Data actors (one tiny transformers engine each) vs the local path: identical predictions."""
    kw = dict(schema=["person", "location"], backend="hf", model=str(tiny_decoder_path), batch_size=4,
              max_tokens=6, show_progress=False)
    local = extract_file(input_file, tmp_path / "local.jsonl", **kw)
    remote = extract_file(input_file, tmp_path / "ray.jsonl", **kw, **RAY)
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert [p.id for p in read_jsonl(tmp_path / "ray.jsonl")] == [f"r{i}" for i in range(24)]
    assert remote.records == local.records == 24 and remote.prompts == local.prompts == 24
    assert remote.completion_tokens == local.completion_tokens and remote.malformed_lines == 1
    assert remote.f1 == local.f1 and remote.entities == local.entities
    assert ray.is_initialized()  # a Ray the caller started is left running


def test_ray_resume_dispatches_only_unfinished_records(input_file, tmp_path, local_ray):
    """A local run cut after 9 records (and a partial line) resumed through Ray equals the full run."""
    factory = functools.partial(ScriptedEngine, {}, default="person: Ada; person: Bob")
    kw = dict(schema=["person", "location"], engine_factory=factory, batch_size=4, show_progress=False)
    out = tmp_path / "out.jsonl"
    extract_file(input_file, out, **kw)
    full = out.read_bytes()
    rows = full.splitlines(keepends=True)
    out.write_bytes(b"".join(rows[:9]) + rows[9][:10])
    resumed = extract_file(input_file, out, **kw, **RAY)
    assert resumed.resumed == 9 and resumed.processed == 15 and resumed.prompts == 15
    assert out.read_bytes() == full
    assert json.loads((tmp_path / "out.jsonl.run.json").read_text())["status"] == "complete"
    assert resumed.entities == sum(len(p.entities) for p in read_jsonl(out)) > 0
