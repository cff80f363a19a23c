"""A persistent cache around any engine: finished results survive crashes and make re-runs cheap.

SQLite in WAL mode so several processes (runner workers, a notebook) can share one file.
Keys cover everything that changes an output (see ``request_key``). Sampled generations
without a seed are not deterministic, so they are never served from the cache.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from openie.engines.base import Engine, EngineError, Generation, GenerationRequest, Score, ScoreRequest, request_key


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    uncacheable: int = 0

    def __str__(self) -> str:
        total = self.hits + self.misses
        rate = self.hits / total if total else 0.0
        return f"cache: {self.hits} hits, {self.misses} misses ({rate:.0%} hit rate), {self.uncacheable} uncacheable"


class CachedEngine:
    """Wraps ``engine``; ``enabled=False`` bypasses the cache (nothing read, nothing written)."""

    def __init__(self, engine: Engine, path: str | Path, enabled: bool = True):
        self.engine = engine
        self.model_id = engine.model_id
        self.path = Path(path)
        self.enabled = enabled
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, kind TEXT, value TEXT)")

    def __getattr__(self, name: str):  # expose backend extras (tokenizer, max_model_len ...)
        if name == "engine":  # not set yet (copy/unpickle): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.engine, name)

    def adapter_fingerprint(self, name: str | None) -> str:
        return self.engine.adapter_fingerprint(name)

    def _get(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self._db.execute(
                f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
            found.update(rows)
        return found

    def _put(self, kind: str, items: list[tuple[str, str]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(f"INSERT OR REPLACE INTO results VALUES (?, '{kind}', ?)", items)
            self._db.execute("COMMIT")

    def _keep_partial(self, kind: str, err: EngineError, keys: list[str]) -> None:
        """A call that failed in part (``err.completed``: its answers in request order, ``None`` where
        none came back, as :class:`~openie.engines.openai_endpoint.RequestsFailedError` carries them):
        the answers that did come back are stored, so a re-run sends only what failed."""
        completed = getattr(err, "completed", None)
        if not isinstance(completed, list) or len(completed) != len(keys):
            return
        items = [(k, json.dumps(r.to_dict())) for k, r in zip(keys, completed, strict=True) if k and r is not None]
        if items:
            self._put(kind, items)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if not self.enabled:
            return self.engine.generate(requests)
        cacheable = [r.temperature == 0 or r.seed is not None for r in requests]
        keys = [request_key(self.engine, "generate", r) if ok else "" for r, ok in zip(requests, cacheable, strict=True)]
        found = self._get([k for k in keys if k])
        todo = [i for i, k in enumerate(keys) if not k or k not in found]
        try:
            fresh = self.engine.generate([requests[i] for i in todo]) if todo else []
        except EngineError as err:
            self._keep_partial("generate", err, [keys[i] for i in todo])
            raise
        out: list[Generation | None] = [None] * len(requests)
        for i, k in enumerate(keys):
            if k and k in found:
                out[i] = replace(Generation(**json.loads(found[k])), cached=True)
        self._put("generate", [(keys[i], json.dumps(g.to_dict())) for i, g in zip(todo, fresh, strict=True) if keys[i]])
        for i, g in zip(todo, fresh, strict=True):
            out[i] = g
        self.stats.hits += len(requests) - len(todo)
        self.stats.misses += sum(1 for i in todo if keys[i])
        self.stats.uncacheable += sum(1 for k in keys if not k)
        return out  # type: ignore[return-value]

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        if not self.enabled:
            return self.engine.loglikelihood(requests)
        keys = [request_key(self.engine, "loglikelihood", r) for r in requests]
        found = self._get(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        try:
            fresh = self.engine.loglikelihood([requests[i] for i in todo]) if todo else []
        except EngineError as err:
            self._keep_partial("loglikelihood", err, [keys[i] for i in todo])
            raise
        self._put("loglikelihood", [(keys[i], json.dumps(s.to_dict())) for i, s in zip(todo, fresh, strict=True)])
        out: list[Score | None] = [None] * len(requests)
        for i, k in enumerate(keys):
            if k in found:
                out[i] = replace(Score(**json.loads(found[k])), cached=True)
        for i, s in zip(todo, fresh, strict=True):
            out[i] = s
        self.stats.hits += len(requests) - len(todo)
        self.stats.misses += len(todo)
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._db.close()
