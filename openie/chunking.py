"""Chunking: split long inputs into overlapping windows and merge their annotations back.

Every position of the text is *owned* by exactly one chunk (overlaps are split at their
midpoint); an annotation is kept from the chunk that owns its start, so the overlap never
yields duplicates and a mention cut at a chunk edge is taken from the neighbour that sees it whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from openie.records import Entity, Event, EventArgument, Record, Relation

_WORD_SPAN = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    """A window ``text[start:end]`` of a longer text, with the region it owns."""

    index: int
    start: int
    end: int
    text: str
    own_start: int
    own_end: int


def chunk_text(text: str, max_words: int = 256, overlap_words: int = 32,
               count: Callable[[str], int] | None = None) -> list[Chunk]:
    """Windows of at most ``max_words`` whitespace words, consecutive windows sharing ``overlap_words``.

    ``count`` optionally measures a candidate window (e.g. in model tokens); a window is shrunk
    word by word until ``count(window) <= max_words``.
    """
    if max_words < 1 or not 0 <= overlap_words < max_words:
        raise ValueError(f"need max_words >= 1 and 0 <= overlap_words < max_words, got {max_words}, {overlap_words}")
    words = [(m.start(), m.end()) for m in _WORD_SPAN.finditer(text)]
    if not words:
        return [Chunk(0, 0, len(text), text, 0, len(text))]
    bounds: list[tuple[int, int]] = []  # word index ranges
    i = 0
    while True:
        j = min(len(words), i + max_words)
        if count is not None:
            while j - i > 1 and count(text[words[i][0]:words[j - 1][1]]) > max_words:
                j -= 1
        bounds.append((i, j))
        if j >= len(words):
            break
        i = max(i + 1, j - overlap_words)
    chunks = []
    for k, (i, j) in enumerate(bounds):
        start = 0 if k == 0 else words[i][0]
        end = len(text) if k == len(bounds) - 1 else words[j - 1][1]
        chunks.append(Chunk(k, start, end, text[start:end], 0, 0))
    owned = []
    for k, c in enumerate(chunks):
        own_start = 0 if k == 0 else owned[-1].own_end
        if k == len(chunks) - 1:
            own_end = len(text)
        else:
            nxt = chunks[k + 1]
            own_end = (nxt.start + c.end) // 2 if nxt.start < c.end else nxt.start
        owned.append(replace(c, own_start=own_start, own_end=max(own_start, own_end)))
    return owned


def chunk_record(record: Record, max_words: int = 256, overlap_words: int = 32,
                 count: Callable[[str], int] | None = None) -> list[tuple[Chunk, Record]]:
    """Unannotated sub-records for each chunk; ids are ``{id}#c{k}`` and meta points to the parent."""
    out = []
    for c in chunk_text(record.text, max_words, overlap_words, count):
        sub = Record(id=f"{record.id}#c{c.index}", text=c.text, lang=record.lang,
                     meta={"parent_id": record.id, "chunk_index": c.index, "chunk_start": c.start})
        out.append((c, sub))
    return out


def _shift(e: Entity, by: int) -> Entity:
    return replace(e, start=e.start + by, end=e.end + by)


def merge_chunks(record: Record, chunks: Sequence[Chunk], predictions: Sequence[Record]) -> Record:
    """Annotations of per-chunk predictions mapped to global offsets, owned by one chunk each."""
    if len(chunks) != len(predictions):
        raise ValueError(f"{len(chunks)} chunks but {len(predictions)} chunk predictions")
    entities: dict[tuple[int, int, str], Entity] = {}
    relations: dict[tuple, Relation] = {}
    events: dict[tuple, Event] = {}
    for c, p in zip(chunks, predictions, strict=True):
        def owns(start: int, c: Chunk = c) -> bool:
            return c.own_start <= start < c.own_end or (start == c.own_end == len(record.text))

        for e in p.entities:
            g = _shift(e, c.start)
            if owns(g.start):
                entities.setdefault((g.start, g.end, g.label), g)
        for r in p.relations:
            g = Relation(_shift(r.head, c.start), _shift(r.tail, c.start), r.label, r.score)
            if owns(min(g.head.start, g.tail.start)):
                relations.setdefault((g.head.span, g.head.label, g.tail.span, g.tail.label, g.label), g)
        for ev in p.events:
            trig = _shift(ev.trigger, c.start)
            if owns(trig.start):
                args = tuple(EventArgument(a.start + c.start, a.end + c.start, a.role, a.text, a.score)
                             for a in ev.arguments)
                events.setdefault((trig.span, trig.label, args), Event(trig, args, ev.score))
    return replace(record, entities=sorted(entities.values()), relations=list(relations.values()),
                   events=list(events.values()))
