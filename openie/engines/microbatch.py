"""Gather one-request calls from concurrent callers into engine batches.

DSPy, and any client written against a chat API, sends one request per call and waits for it. An
openie engine earns its throughput from batches (vLLM schedules them together; transformers pads
them into one forward pass). :class:`MicroBatchEngine` sits between the two: several records run
at once, one thread each, and the ``generate`` calls they make while the others are also waiting
leave as one engine call. Nothing about a request changes, so outputs and cache keys are those of
the same requests sent one by one (up to the engine's own batch invariance).

Engines are not batch invariant everywhere (bfloat16 kernels on CPU round differently for another
batch), so by default a batch is ``deterministic``: it leaves only when every caller in flight is
waiting, with its requests ordered by (round, caller rank), never by arrival time. The same records
then make the same engine calls in every run, and a re-run reproduces its figures.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from openie.engines.base import Engine, Generation, GenerationRequest


@dataclass
class _Slot:
    requests: list[GenerationRequest]
    key: tuple[int, int] = (0, 0)  # (round it was asked in, its caller's rank): the order inside a batch
    result: list[Generation] | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass
class MicroBatchEngine:
    """An engine whose ``generate`` gathers the calls of concurrent callers into one call of ``engine``.

    Callers in flight register with :meth:`caller` (or :meth:`join` and :meth:`leave`) and give
    their rank (:meth:`rank`, e.g. the record's index in its batch). A ``deterministic`` batch leaves
    when every registered caller is waiting, ordered by (round, rank), split at ``max_batch``
    requests (the most one engine call carries). Otherwise a batch also leaves when it holds
    ``max_batch`` requests or ``max_wait_s`` after its first request arrived, so a caller busy
    elsewhere (in a tool, say) delays the others by at most that, at the price of batches that
    depend on timing. Unregistered use is a plain pass-through. One engine call runs at a time; an
    engine error reaches every caller of that batch. ``batch_sizes`` lists what was sent.
    """

    engine: Engine
    max_batch: int = 64
    max_wait_s: float = 0.1
    deterministic: bool = True
    batch_sizes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._first: float | None = None
        self._callers = 0
        self._busy = False  # an engine call is running
        self._round = 0  # batches sent so far
        self._local = threading.local()

    def rank(self, rank: int) -> None:
        """The calling thread's rank: its requests go before those of higher ranks in a batch."""
        self._local.rank = rank

    def join(self, n: int = 1) -> None:
        """Count ``n`` more callers in flight. Join them before they start, so the first to ask waits for the rest."""
        with self._cond:
            self._callers += n

    def leave(self) -> None:
        """One caller in flight is done."""
        with self._cond:
            self._callers -= 1
            self._cond.notify_all()  # the ones still waiting may now be all there is

    @contextlib.contextmanager
    def caller(self) -> Iterator[None]:
        """The current thread as a caller in flight for the ``with`` block."""
        self.join()
        try:
            yield
        finally:
            self.leave()

    def _ready(self) -> bool:
        if not self._pending or self._busy:
            return False
        if self.deterministic:  # every caller is waiting, or calls left over from a split batch go first
            return len(self._pending) >= max(1, self._callers) or self._pending[0].key[0] < self._round
        requests = sum(len(s.requests) for s in self._pending)
        waited = time.monotonic() - (self._first or time.monotonic())
        return len(self._pending) >= max(1, self._callers) or requests >= self.max_batch or waited >= self.max_wait_s

    def _take(self) -> list[_Slot]:
        """The oldest pending calls, up to ``max_batch`` requests (a larger single call goes alone).

        Calls left behind keep their arrival time, so they leave as soon as the engine is free.
        """
        if self.deterministic:
            self._pending.sort(key=lambda s: s.key)
        oldest = self._pending[0].key[0]
        taken = requests = 0
        for slot in self._pending:
            if taken and (requests + len(slot.requests) > self.max_batch
                          or (self.deterministic and slot.key[0] != oldest)):  # a split batch's rest goes alone
                break
            taken += 1
            requests += len(slot.requests)
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        if not self._pending:
            self._first = None
        return batch

    def _run(self, batch: list[_Slot]) -> None:
        """Send ``batch`` (the lock is released meanwhile) and hand each slot its part."""
        requests = [r for s in batch for r in s.requests]
        self._busy = True
        self._round += 1
        self._cond.release()
        outputs: list[Generation] | None = None
        error: BaseException | None = None
        try:
            outputs = list(self.engine.generate(requests))
        except BaseException as err:  # noqa: BLE001 - handed to every caller of the batch
            error = err
        finally:
            self._cond.acquire()
            self._busy = False
        self.batch_sizes.append(len(requests))
        start = 0
        for slot in batch:
            if error is not None:
                slot.error = error
            else:
                assert outputs is not None
                slot.result = outputs[start:start + len(slot.requests)]
                start += len(slot.requests)
            slot.done = True
        self._cond.notify_all()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        slot = _Slot(list(requests))
        if not slot.requests:
            return []
        with self._cond:
            slot.key = (self._round, getattr(self._local, "rank", 0))
            self._pending.append(slot)
            if self._first is None:
                self._first = time.monotonic()
            self._cond.notify_all()
            while not slot.done:
                if self._ready():
                    batch = self._take()
                    self._run(batch)
                    continue
                timeout = self.max_wait_s if self._first is None else max(
                    0.001, self.max_wait_s - (time.monotonic() - self._first))
                self._cond.wait(timeout)
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    def loglikelihood(self, requests: Sequence[Any]) -> list[Any]:
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            return self.engine.loglikelihood(requests)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def __getattr__(self, name: str) -> Any:
        if name in ("engine", "_cond"):
            raise AttributeError(name)
        return getattr(self.engine, name)


__all__ = ["MicroBatchEngine"]
