"""Chunking: split long inputs into overlapping windows and merge their annotations back.

Every position of the text is *owned* by exactly one chunk (overlaps are split at their
midpoint); an annotation is kept from the chunk that owns its start, so the overlap never
yields duplicates and a mention cut at a chunk edge is taken from the neighbour that sees it whole.

Windows are made of *units* (see :func:`text_units`): words for scripts written with spaces, single
characters for scripts written without them (Chinese, Japanese, Thai, ...), so a text in any script
is cut into windows that respect a budget, measured in units or by a caller's ``count`` (model tokens).
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from itertools import accumulate

from openie.records import Entity, Event, EventArgument, Record, Relation

MAX_UNIT_CHARS = 32
"""No unit is longer: a URL, base64 or any unbroken run is cut into pieces of at most this many characters."""

_TOKEN = re.compile(r"\S+")

# Scripts written without spaces between words: every character (with its marks) is a unit.
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x2E80, 0x2FDF),  # CJK and Kangxi radicals
    (0x2FF0, 0x312F),  # ideographic description, CJK symbols and punctuation, Hiragana, Katakana, Bopomofo
    (0x3190, 0x31FF),  # Kanbun, Bopomofo extended, CJK strokes, Katakana phonetic extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFE30, 0xFE4F),  # CJK compatibility forms
    (0xFF61, 0xFF9F),  # halfwidth CJK punctuation and Katakana
    (0x16FE0, 0x16FFF),  # ideographic symbols
    (0x1AFF0, 0x1B16F),  # Kana extensions and supplement
    (0x20000, 0x3FFFF),  # ideographic planes: CJK extensions B-I, compatibility supplement
)
_NO_SPACE_STARTS = [lo for lo, _ in _NO_SPACE_RANGES]
# Han, Kana and CJK punctuation without combining marks: a run of them is a run of one-character units.
_PLAIN_CJK_RUN = re.compile("[\u3001-\u3029\u3030-\u3098\u309b-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                            "\uf900-\ufaff\U00020000-\U0003ffff]{2,}")


def _no_space(cp: int) -> bool:
    if cp < 0x0E00:
        return False
    k = bisect_right(_NO_SPACE_STARTS, cp) - 1
    return k >= 0 and cp <= _NO_SPACE_RANGES[k][1]


def _extends(c: str) -> bool:
    """Whether ``c`` belongs to the character before it (a mark, variation selector, emoji modifier or tag)."""
    q = ord(c)
    if q < 0x0300:
        return False
    return (unicodedata.category(c)[0] == "M" or q == 0x200C or 0x1F3FB <= q <= 0x1F3FF
            or 0xE0020 <= q <= 0xE007F)


def _pieces(s: int, e: int, out: list[tuple[int, int]]) -> None:
    out.extend((p, min(p + MAX_UNIT_CHARS, e)) for p in range(s, e, MAX_UNIT_CHARS))


def _split_token(text: str, s: int, e: int, out: list[tuple[int, int]]) -> None:
    """Units of one whitespace-free token: characters of no-space scripts, runs of the rest.

    Runs are cut at character-cluster boundaries (a base with its marks, a ZWJ emoji sequence, a flag),
    so a piece never starts with a mark unless the cluster alone is longer than ``MAX_UNIT_CHARS``.
    """
    run = -1  # start of the pending run of characters of spaced scripts
    i = s
    while i < e:
        cp = ord(text[i])
        if cp > 0x3000 and (plain := _PLAIN_CJK_RUN.match(text, i, e)) is not None:
            if run >= 0:
                out.append((run, i))
                run = -1
            last = plain.end() - 1  # may carry marks: it goes the slow way
            out.extend(zip(range(i, last), range(i + 1, last + 1), strict=True))
            i = last
            cp = ord(text[i])
        j = i + 1
        if 0x1F1E6 <= cp <= 0x1F1FF and j < e and 0x1F1E6 <= ord(text[j]) <= 0x1F1FF:
            j += 1  # a flag: two regional indicators
        while j < e:
            if text[j] == "\u200d":
                j = min(j + 2, e)
            elif _extends(text[j]):
                j += 1
            else:
                break
        if _no_space(cp):
            if run >= 0:
                out.append((run, i))
                run = -1
            _pieces(i, j, out)
        else:
            if run < 0:
                run = i
            elif j - run > MAX_UNIT_CHARS:
                out.append((run, i))
                run = i
            if j - run > MAX_UNIT_CHARS:  # one cluster longer than the cap: its last piece starts a run
                last = j - ((j - run - 1) % MAX_UNIT_CHARS + 1)
                _pieces(run, last, out)
                run = last
        i = j
    if run >= 0:
        out.append((run, e))


def text_units(text: str) -> list[tuple[int, int]]:
    """Character spans of the units a budget counts: whitespace-separated words of scripts written
    with spaces, single characters (with their marks) of Han, Kana, Thai, Lao, Khmer, Myanmar and
    Tibetan; a word mixing the two kinds is split where they meet, and no unit is longer than
    ``MAX_UNIT_CHARS`` characters."""
    out: list[tuple[int, int]] = []
    for m in _TOKEN.finditer(text):
        s, e = m.span()
        token = m.group()
        if token.isascii() or max(token) < "\u0300":
            if e - s <= MAX_UNIT_CHARS:
                out.append((s, e))
            else:
                _pieces(s, e, out)
        else:
            _split_token(text, s, e, out)
    return out


@dataclass(frozen=True)
class Chunk:
    """A window ``text[start:end]`` of a longer text, with the region it owns."""

    index: int
    start: int
    end: int
    text: str
    own_start: int
    own_end: int


def _fit(unit: str, count: Callable[[str], int], budget: int) -> list[tuple[int, int, int]]:
    """``(start, end, count)`` pieces of ``unit`` that each fit the budget (or are one character):
    the longest fitting prefix, found by binary search, again and again."""
    out = []
    s, n = 0, len(unit)
    while s < n:
        c = count(unit[s:])
        if c <= budget:
            out.append((s, n, c))
            break
        lo, hi, lo_count = s + 1, n, None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            c = count(unit[s:mid])
            if c <= budget:
                lo, lo_count = mid, c
            else:
                hi = mid
        out.append((s, lo, count(unit[s:lo]) if lo_count is None else lo_count))
        s = lo
    return out


def _costed(text: str, units: list[tuple[int, int]], count: Callable[[str], int],
            budget: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Units cut until each fits the budget alone, and their costs: ``count`` of each distinct unit
    (once), less ``count("")`` (special tokens a counter may add), and at least 1 so windows stay bounded."""
    base = count("")
    memo: dict[str, list[tuple[int, int, int]]] = {}
    spans: list[tuple[int, int]] = []
    costs: list[int] = []
    for s, e in units:
        u = text[s:e]
        pieces = memo.get(u)
        if pieces is None:
            pieces = memo[u] = [(ps, pe, max(1, c - base)) for ps, pe, c in _fit(u, count, budget)]
        if len(pieces) == 1:
            spans.append((s, e))
            costs.append(pieces[0][2])
        else:
            for ps, pe, c in pieces:
                spans.append((s + ps, s + pe))
                costs.append(c)
    return spans, costs


_SENTENCE_END = frozenset(".!?。！？")


def chunk_text(text: str, max_tokens: int = 256, overlap_tokens: int = 32,
               count: Callable[[str], int] | None = None, align_sentences: bool = False,
               one_sentence: bool = False) -> list[Chunk]:
    """Windows whose text costs at most ``max_tokens``, consecutive windows sharing about ``overlap_tokens``.

    Without ``count`` a unit (:func:`text_units`: a word, or a character of a script written without
    spaces) costs 1. With ``count`` (e.g. a tokenizer's token count) every chunk satisfies
    ``count(chunk.text) <= max_tokens``: units too costly alone are cut by characters, each distinct unit
    is counted once to size a window, and each window is counted whole and shrunk when it overcounts,
    so ``count`` never sees more than a few windows' worth of text per chunk. A single character that
    alone overcounts is the one exception: it is a chunk of its own.

    Chunks start and end at unit boundaries; the first includes the text's leading whitespace and the
    last its trailing whitespace, and chunks that share no unit touch, when the budget allows.

    ``align_sentences`` ends a chunk after the last sentence that ends in its second half (``.``,
    ``!``, ``?``, ``。``, ``！``, ``？`` closing a unit, or a line break after it), and starts the next
    one there without overlap: a model reads whole sentences, and no mention straddles the cut.
    ``one_sentence`` cuts after the first sentence end instead: a chunk per sentence (a sentence
    longer than the budget is still cut by it).
    """
    if max_tokens < 1 or not 0 <= overlap_tokens < max_tokens:
        raise ValueError(f"need max_tokens >= 1 and 0 <= overlap_tokens < max_tokens, got {max_tokens}, {overlap_tokens}")
    spans = text_units(text)
    if not spans:
        return [Chunk(0, 0, len(text), text, 0, len(text))]
    if count is None:
        costs = [1] * len(spans)
    else:
        spans, costs = _costed(text, spans, count, max_tokens)
    n = len(spans)
    starts = [s for s, _ in spans]
    ends = [e for _, e in spans]
    cum = list(accumulate(costs, initial=0))

    def window(i: int, lead: bool) -> tuple[int, int, int]:
        """``(start, end, j)`` of the longest affordable window of units ``i..j-1``."""
        a = (ends[i - 1] if i else 0) if lead else starts[i]

        def end(j: int) -> int:
            return len(text) if j == n else ends[j - 1]

        def fits(j: int) -> bool:
            return count is None or count(text[a:end(j)]) <= max_tokens

        j = max(i + 1, min(n, bisect_right(cum, cum[i] + max_tokens) - 1))
        if count is None:
            return a, end(j), j
        whole = count(text[a:end(j)])
        if whole <= max_tokens:
            return a, end(j), j
        lo, hi, lo_fits = i + 1, j, False
        for _ in range(3):  # shrink in proportion to the overcount: one or two more counts, usually
            guess = min(hi - 1, i + (hi - i) * max_tokens // whole)
            if guess <= lo:
                break
            whole = count(text[a:end(guess)])
            if whole <= max_tokens:
                return a, end(guess), guess
            hi = guess
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if fits(mid):
                lo, lo_fits = mid, True
            else:
                hi = mid
        if lo_fits or fits(lo):
            return a, end(lo), lo
        return starts[i], ends[i], i + 1  # the unit fits alone, not with the whitespace around it

    def sentence_end(i: int, j: int, a: int) -> int | None:
        """The unit after the last sentence end among units ``i..j-1`` (second half only; with
        ``one_sentence`` the first anywhere), if it fits."""
        for k in (range(i, j) if one_sentence else range(j - 1, i + (j - i) // 2 - 1, -1)):
            if k + 1 >= n:  # the text's end: nothing to cut off
                continue
            tail = text[ends[k]:starts[k + 1]]
            if text[ends[k] - 1] in _SENTENCE_END or "\n" in tail:
                if count is None or count(text[a:ends[k]]) <= max_tokens:
                    return k + 1
                return None
        return None

    bounds: list[tuple[int, int]] = []
    i, lead, covered = 0, True, 0
    while True:
        a, b, j = window(i, lead)
        if j <= covered:  # shrunk to units already covered: go on after them, without overlap
            i, lead = covered, True
            continue
        cut = sentence_end(i, j, a) if (align_sentences and j < n) or one_sentence else None
        if cut is not None:  # whole sentences: the next chunk starts at the next sentence, no overlap
            bounds.append((a, ends[cut - 1]))
            i, lead, covered = cut, True, cut
            continue
        bounds.append((a, b))
        if j == n:
            break
        covered = j
        room = min(overlap_tokens, max_tokens - costs[j])  # the overlap leaves room for unit j
        i = max(i + 1, bisect_left(cum, cum[j] - room)) if room >= 0 else j
        lead = i == j

    chunks = []
    own_start = 0
    for k, (a, b) in enumerate(bounds):
        if k == len(bounds) - 1:
            own_end = len(text)
        else:
            na = bounds[k + 1][0]
            own_end = (na + b) // 2 if na < b else na
        own_end = max(own_start, own_end)
        chunks.append(Chunk(k, a, b, text[a:b], own_start, own_end))
        own_start = own_end
    return chunks


def chunk_record(record: Record, max_tokens: int = 256, overlap_tokens: int = 32,
                 count: Callable[[str], int] | None = None, align_sentences: bool = False,
                 one_sentence: bool = False) -> list[tuple[Chunk, Record]]:
    """Unannotated sub-records for each chunk; ids are ``{id}#c{k}`` and meta points to the parent."""
    out = []
    for c in chunk_text(record.text, max_tokens, overlap_tokens, count, align_sentences, one_sentence):
        lead = len(c.text) - len(c.text.lstrip())
        if c.text.strip():  # a model reads the chunk without the whitespace around it
            c = replace(c, start=c.start + lead, text=c.text.strip(), end=c.start + lead + len(c.text.strip()))
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
