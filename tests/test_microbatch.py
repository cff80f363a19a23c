from __future__ import annotations

import threading

import pytest

from openie.engines.base import GenerationRequest
from openie.engines.microbatch import MicroBatchEngine
from openie.engines.scripted import ScriptedEngine


class CountingEngine(ScriptedEngine):
    """Echoes each prompt; remembers the size of every ``generate`` call."""

    def __init__(self, fail: bool = False):
        super().__init__(lambda r: "echo " + r.prompt)
        self.sizes: list[int] = []
        self.fail = fail

    def generate(self, requests):
        self.sizes.append(len(requests))
        if self.fail:
            raise RuntimeError("engine down")
        return super().generate(requests)


def run_callers(batcher: MicroBatchEngine, n: int) -> dict[int, str]:
    out: dict[int, str] = {}
    start = threading.Barrier(n)

    def work(i: int) -> None:
        with batcher.caller():
            start.wait()
            out[i] = batcher.generate([GenerationRequest(prompt=f"p{i}")])[0].text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def test_concurrent_single_requests_leave_as_one_batch_and_each_caller_gets_its_own_answer():
    engine = CountingEngine()
    batcher = MicroBatchEngine(engine, max_wait_s=5.0)  # only "everyone is waiting" can release early
    out = run_callers(batcher, 6)
    assert out == {i: f"echo p{i}" for i in range(6)}
    assert engine.sizes == [6] and batcher.batch_sizes == [6]


def test_max_batch_splits_the_gathered_requests():
    engine = CountingEngine()
    batcher = MicroBatchEngine(engine, max_batch=4, max_wait_s=5.0)
    out = run_callers(batcher, 8)
    assert out == {i: f"echo p{i}" for i in range(8)}
    assert engine.sizes == [4, 4]  # full batches leave at once; the second does not wait out max_wait_s
    big = MicroBatchEngine(CountingEngine(), max_batch=2)
    assert len(big.generate([GenerationRequest(prompt=str(i)) for i in range(5)])) == 5  # one call larger than a batch


def test_a_caller_busy_elsewhere_does_not_hold_the_others_back():
    engine = CountingEngine()
    batcher = MicroBatchEngine(engine, max_wait_s=0.05, deterministic=False)
    answered = threading.Event()
    results: list[str] = []

    def busy() -> None:  # registered, but only asks once the other caller has its answer
        with batcher.caller():
            assert answered.wait(timeout=30)
            results.append(batcher.generate([GenerationRequest(prompt="late")])[0].text)

    def prompt() -> None:
        with batcher.caller():
            results.append(batcher.generate([GenerationRequest(prompt="now")])[0].text)
            answered.set()

    threads = [threading.Thread(target=busy), threading.Thread(target=prompt)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == ["echo now", "echo late"] and engine.sizes == [1, 1]


def test_deterministic_batches_are_ordered_by_rank_and_wait_for_every_caller():
    """Arrival order never shows: the batch holds every caller's request, lowest rank first, and a
    split batch sends its rest before anything asked later."""
    seen: list[list[str]] = []

    class Recording(CountingEngine):
        def generate(self, requests):
            seen.append([r.prompt for r in requests])
            return super().generate(requests)

    batcher = MicroBatchEngine(Recording(), max_batch=3)
    go = [threading.Event() for _ in range(5)]

    def work(i: int) -> None:
        batcher.rank(i)
        try:
            assert go[i].wait(timeout=30)
            batcher.generate([GenerationRequest(prompt=f"p{i}")])
            batcher.generate([GenerationRequest(prompt=f"q{i}")])
        finally:
            batcher.leave()

    batcher.join(5)  # as DSPyExtractor does: every caller counted before any asks
    threads = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for i in reversed(range(5)):  # the highest rank asks first
        go[i].set()
    for t in threads:
        t.join(timeout=30)
    assert seen[:2] == [["p0", "p1", "p2"], ["p3", "p4"]]
    assert sorted(p for batch in seen[2:] for p in batch) == [f"q{i}" for i in range(5)]
    assert all(batch == sorted(batch) for batch in seen)


def test_engine_errors_reach_every_caller_of_the_batch_and_plain_use_passes_through():
    batcher = MicroBatchEngine(CountingEngine(fail=True), max_wait_s=5.0)
    errors: list[str] = []
    start = threading.Barrier(3)

    def work() -> None:
        with batcher.caller():
            start.wait()
            try:
                batcher.generate([GenerationRequest(prompt="x")])
            except RuntimeError as err:
                errors.append(str(err))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == ["engine down"] * 3

    plain = MicroBatchEngine(CountingEngine())
    assert [g.text for g in plain.generate([GenerationRequest(prompt="a"), GenerationRequest(prompt="b")])] == [
        "echo a", "echo b"]
    assert plain.generate([]) == [] and plain.model_id == plain.engine.model_id
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatchEngine(CountingEngine(), max_batch=0)
