"""The seam every demonstration retriever meets, and the pool bookkeeping they share.

A retriever ranks pool records (training examples) by their usefulness as in-context
demonstrations for a query. Two rules hold for every implementation, so methods never
re-implement them:

* **No self-demonstration.** A pool record whose text equals the query's text (up to runs of
  whitespace) is never returned, nor one with the query record's id: a query seeing its own gold
  answer as a demonstration would inflate every score. ``exclude_text`` names a further text to
  drop when the query string is not the raw sentence (e.g. a formatted RUIE query).
* **Same task only.** Pools that mix tasks tag records with ``meta["task"]``; ``task=`` keeps
  records of that task. A query record's own ``meta["task"]`` is the default. A record without a
  tag belongs to every task, so single-task pools need no tags.

Results are ``(record, score)`` pairs, best first; ties are broken by pool order, so every
retriever is deterministic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from openie.records import Record, read_jsonl, write_jsonl

RECORDS_FILE = "records.jsonl"
CONFIG_FILE = "config.json"
#: Scores closer than this are ties (broken by pool order): backends that sum the same terms in
#: another order then still agree on the ranking.
TIE_DECIMALS = 9

Result = tuple[Record, float]


@runtime_checkable
class Retriever(Protocol):
    """Index a pool once, then return the ``k`` best demonstrations for each query."""

    def index(self, examples: Sequence[Record]) -> None: ...

    def retrieve(self, query: Record | str, k: int, *, task: str | None = None,
                 exclude_text: str | None = None) -> list[Result]: ...

    def save(self, path: str | Path) -> None: ...

    @classmethod
    def load(cls, path: str | Path) -> Retriever: ...


@runtime_checkable
class Reranker(Protocol):
    """Re-score first-stage candidates for a query; returns the best ``k``, best first, with new scores."""

    def rerank(self, query: Record | str, candidates: Sequence[Result], k: int) -> list[Result]: ...


def as_demonstrations(results: Sequence[Result]) -> list[Record]:
    """The records of ``retrieve`` results, most relevant first (the prompt layer puts the most relevant last)."""
    return [record for record, _ in results]


def query_text(query: Record | str) -> str:
    return query.text if isinstance(query, Record) else str(query)


def duplicate_key(text: str) -> str:
    """Texts with the same key are duplicates: equal up to runs of whitespace and the ends."""
    return " ".join(text.split())


def record_task(record: Record) -> str | None:
    task = record.meta.get("task")
    return None if task is None else str(task)


class RecordPool:
    """The indexed records, with lookups for the exclusion and task rules of this module."""

    def __init__(self, records: Sequence[Record] = ()) -> None:
        self.records: list[Record] = list(records)
        self._by_key: dict[str, list[int]] = {}
        self._by_id: dict[str, list[int]] = {}
        tasks: dict[str | None, list[int]] = {}
        for i, record in enumerate(self.records):
            self._by_key.setdefault(duplicate_key(record.text), []).append(i)
            self._by_id.setdefault(record.id, []).append(i)
            tasks.setdefault(record_task(record), []).append(i)
        self._task_members = {t: np.asarray(ix, dtype=np.int64) for t, ix in tasks.items()}
        self._eligible_cache: dict[str | None, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    @property
    def tasks(self) -> list[str]:
        return sorted(t for t in self._task_members if t is not None)

    # -- the two rules ------------------------------------------------------------------------

    @staticmethod
    def resolve_task(query: Record | str, task: str | None) -> str | None:
        if task is not None:
            return task
        return record_task(query) if isinstance(query, Record) else None

    def excluded(self, query: Record | str, exclude_text: str | None = None) -> set[int]:
        """Pool positions that must not be returned for ``query``."""
        text = exclude_text if exclude_text is not None else query_text(query)
        out = set(self._by_key.get(duplicate_key(text), ()))
        if exclude_text is not None:  # the query string itself is never its own demonstration either
            out.update(self._by_key.get(duplicate_key(query_text(query)), ()))
        if isinstance(query, Record):
            out.update(self._by_id.get(query.id, ()))
        return out

    def task_members(self, task: str | None) -> np.ndarray | None:
        """Positions of ``task`` records (untagged ones included); None when every record qualifies."""
        if task is None or set(self._task_members) <= {None, task}:
            return None
        if task not in self._eligible_cache:
            parts = [self._task_members.get(task), self._task_members.get(None)]
            self._eligible_cache[task] = np.sort(np.concatenate([p for p in parts if p is not None]
                                                                or [np.zeros(0, np.int64)]))
        return self._eligible_cache[task]

    def eligible_mask(self, query: Record | str, task: str | None, exclude_text: str | None) -> np.ndarray:
        """Boolean mask over the pool: True where a record may be returned for ``query``."""
        members = self.task_members(self.resolve_task(query, task))
        if members is None:
            mask = np.ones(len(self), dtype=bool)
        else:
            mask = np.zeros(len(self), dtype=bool)
            mask[members] = True
        excluded = self.excluded(query, exclude_text)
        if excluded:
            mask[list(excluded)] = False
        return mask

    def eligible_positions(self, query: Record | str, task: str | None, exclude_text: str | None) -> np.ndarray:
        return np.flatnonzero(self.eligible_mask(query, task, exclude_text))

    # -- selection ----------------------------------------------------------------------------

    def top_k_from_scores(self, scores: np.ndarray, k: int, query: Record | str, *, task: str | None = None,
                          exclude_text: str | None = None) -> list[Result]:
        """Best ``k`` eligible records given a score for every pool record."""
        if k <= 0 or len(self) == 0:
            return []
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(self),):
            raise ValueError(f"expected {len(self)} scores, got shape {scores.shape}")
        positions = self.eligible_positions(query, task, exclude_text)
        if positions.size == 0:
            return []
        keys = np.round(scores[positions], TIE_DECIMALS)
        if positions.size > k:  # only the k best need sorting
            kth = np.partition(-keys, k - 1)[k - 1]
            keep = -keys <= kth
            positions, keys = positions[keep], keys[keep]
        order = np.lexsort((positions, -keys))[:k]
        return [(self.records[int(positions[j])], float(scores[positions[j]])) for j in order]

    def top_k_from_search(self, search: Callable[[int], tuple[np.ndarray, np.ndarray]], k: int,
                          query: Record | str, *, task: str | None = None,
                          exclude_text: str | None = None) -> list[Result]:
        """Best ``k`` eligible records from an approximate index searched for ``n`` hits at a time.

        ``search(n)`` returns (positions, scores) best first, with -1 for missing hits. The
        request grows until ``k`` eligible hits are found or the index has no more to give.
        """
        if k <= 0 or len(self) == 0:
            return []
        mask = self.eligible_mask(query, task, exclude_text)
        n_eligible = int(mask.sum())
        if n_eligible == 0:
            return []
        want = min(k, n_eligible)
        # Over-fetch in proportion to the share of the pool that is eligible (task filters), and by
        # the number of excluded duplicates, so that one search usually suffices.
        n_excluded = len(self.excluded(query, exclude_text))
        n = min(len(self), int(np.ceil(want * len(self) / (n_eligible + n_excluded))) + n_excluded)
        while True:
            positions, scores = search(n)
            hits = [(int(p), float(s)) for p, s in zip(positions, scores, strict=True) if p >= 0 and mask[p]]
            exhausted = int((positions >= 0).sum()) < n or n >= len(self)
            if len(hits) >= want or exhausted:
                break
            n = min(len(self), 2 * n)
        hits.sort(key=lambda ps: (-round(ps[1], TIE_DECIMALS), ps[0]))
        return [(self.records[p], s) for p, s in hits[:k]]

    # -- persistence --------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        write_jsonl(self.records, folder / RECORDS_FILE)

    @classmethod
    def load(cls, folder: Path) -> RecordPool:
        return cls(read_jsonl(folder / RECORDS_FILE))


def write_config(folder: str | Path, kind: str, config: dict[str, Any]) -> Path:
    """Create ``folder`` and write ``config.json`` naming the retriever ``kind`` (see ``load_retriever``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps({"retriever": kind, **config}, indent=2) + "\n")
    return folder


def read_config(folder: str | Path, kind: str | None = None) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} holds no saved retriever ({CONFIG_FILE} is missing)")
    config = json.loads(path.read_text())
    if kind is not None and config.get("retriever") != kind:
        raise ValueError(f"{folder} holds a {config.get('retriever')!r} retriever, not {kind!r}")
    return config


def progress_enabled(show_progress: bool | None) -> bool:
    """``None`` means: show bars when stderr is a terminal (quiet in tests and logs)."""
    if show_progress is not None:
        return bool(show_progress)
    return sys.stderr.isatty()




class MemoizedRetriever:
    """A deterministic retriever whose results are remembered per query: the top ``k`` is a prefix of a larger top ``k``."""

    def __init__(self, retriever: Retriever, size: int = 100_000) -> None:
        self.retriever, self.size = retriever, size
        self._memo: dict[tuple, tuple[int, list[Result]]] = {}

    def retrieve(self, query: Record | str, k: int, *, task: str | None = None,
                 exclude_text: str | None = None) -> list[Result]:
        key = (query.id if isinstance(query, Record) else None, getattr(query, "text", query), task, exclude_text)
        hit = self._memo.get(key)
        if hit is not None and (hit[0] >= k or len(hit[1]) < hit[0]):
            return hit[1][:k]
        results = self.retriever.retrieve(query, k, task=task, exclude_text=exclude_text)
        if len(self._memo) >= self.size:
            self._memo.pop(next(iter(self._memo)))
        self._memo[key] = (k, results)
        return results


__all__ = [
    "MemoizedRetriever", "RecordPool", "Reranker", "Result", "Retriever", "as_demonstrations", "duplicate_key", "query_text",
    "read_config", "record_task", "write_config",
]
