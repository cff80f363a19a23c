"""Grounding: find where a span a model wrote actually stands in the input.

Models paraphrase, change case and drop spaces; every predicted annotation is tied back to
character offsets with a status saying how trustworthy the tie is.

Texts are cut into units: words in scripts that separate words with spaces, single characters in
scripts that do not (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan), punctuation and symbols one
character each, combining marks staying with the character they modify. Whitespace-insensitive
and fuzzy matches start and end on unit boundaries, so a paraphrased Chinese span is grounded
character by character rather than by whole clauses.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache, cached_property
from itertools import accumulate
from math import ceil, floor

from rapidfuzz import fuzz, process

_NOSPACE = ("\u0e00-\u0eff"                                 # Thai, Lao
            "\u0f00-\u0fff"                                 # Tibetan
            "\u1000-\u109f\ua9e0-\ua9ff\uaa60-\uaa7f"       # Myanmar
            "\u1780-\u17ff\u19e0-\u19ff"                    # Khmer
            "\u3005-\u3007\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"  # kana, iteration marks
            "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f")  # Han
_NOSPACE_CHAR = re.compile(f"[{_NOSPACE}]")

# fuzzy search bounds: all fixed, so the cost per span is linear in the text's length
_CHUNK = 2_048        # characters per chunk that partial_ratio scores in the search for candidates
_REGIONS = 8          # best chunks whose alignments are searched
_WORDS = 3            # longest query units looked up in the text's vocabulary
_SIMILAR = 8          # vocabulary units kept per query unit (ratio >= 60)
_PLACES = 4           # first occurrences searched of each (one more per taken span)
_EXHAUSTIVE = 200_000  # characters compared to search a region window by window; beyond, local search
_WINDOWS = 50_000     # windows scored one by one per span; beyond, local search


@cache
def _marks() -> str:
    """Regex class body of the characters that belong to the one before them: combining marks,
    zero-width (non-)joiners, emoji skin tones, tags and variation selectors. Built from
    ``unicodedata`` once (~15 ms), so it follows Python's Unicode version. Marks beyond the BMP
    are left out but for the emoji ones: a class with many astral ranges makes the regex scan them
    one by one for every unit (3x slower tokenisation), and those scripts are rare."""
    ranges: list[list[int]] = []
    for cp in range(0x10000):
        if unicodedata.category(chr(cp))[0] == "M":
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return ("".join(f"{chr(a)}-{chr(b)}" for a, b in ranges)
            + "\u200c\u200d\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\U000e0100-\U000e01ef")


@cache
def _unit_re() -> re.Pattern[str]:
    mark = f"[{_marks()}]"
    return re.compile(rf"[{_NOSPACE}]{mark}*|[^\W{_NOSPACE}]+(?:{mark}+[^\W{_NOSPACE}]*)*|[^\w\s]{mark}*")


@cache
def _mark_re() -> re.Pattern[str]:
    return re.compile(f"[{_marks()}]")


def _normalise(s: str) -> str:
    """Units, case-folded, joined by one space: the form in which whitespace does not matter."""
    return " ".join(_unit_re().findall(s)).casefold()


class AlignmentStatus(StrEnum):
    EXACT = "exact"          # the span's text occurs verbatim
    FUZZY = "fuzzy"          # found after case folding, whitespace normalisation or approximate matching
    NOT_FOUND = "not_found"  # nothing in the input is close enough


@dataclass(frozen=True)
class Alignment:
    """Where a predicted span stands in the input; offsets are None when not found."""

    query: str
    start: int | None
    end: int | None
    status: AlignmentStatus
    similarity: float  # 1.0 for exact and case-insensitive matches
    method: str        # exact | casefold | whitespace | fuzzy | none

    @property
    def found(self) -> bool:
        return self.status is not AlignmentStatus.NOT_FOUND


@dataclass(frozen=True)
class _Units:
    starts: list[int]
    ends: list[int]
    joined: str          # " " + the text's units, case-folded, joined by single spaces + " "
    offsets: list[int]   # where each unit starts in ``joined``


class _Index:
    """What grounding needs of one text, computed once and only when a stage asks for it:
    ``ground_all`` grounds every span of an output against the same, possibly megabyte, text."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def folded(self) -> str | None:
        """The case-folded text; None where folding changes lengths (ß -> ss) and offsets would not carry over."""
        folded = self.text.casefold()
        return folded if len(folded) == len(self.text) else None

    @cached_property
    def units(self) -> _Units:
        spans = [m.span() for m in _unit_re().finditer(self.text)]
        pieces = [self.text[s:e] for s, e in spans]
        joined = " ".join(pieces)
        folded = joined.casefold()
        lengths = map(len, pieces) if len(folded) == len(joined) else (len(p.casefold()) for p in pieces)
        offsets = list(accumulate((n + 1 for n in lengths), initial=1))[:-1]
        return _Units([s for s, _ in spans], [e for _, e in spans], f" {folded} ", offsets)

    @cached_property
    def vocabulary(self) -> dict[str, tuple[int, int]]:
        """Each distinct case-folded unit of the text: where it first stands (unit index) and how often."""
        units = self.units.joined[1:-1].split(" ")
        first = dict(zip(reversed(units), range(len(units) - 1, -1, -1), strict=True))
        return {w: (first[w], c) for w, c in Counter(units).items()}


def _joins(a: str, b: str) -> bool:
    """Whether adjacent characters ``a`` and ``b`` stand in one unit."""
    if _mark_re().match(b):
        return True
    return a.isalnum() and b.isalnum() and not _NOSPACE_CHAR.match(a) and not _NOSPACE_CHAR.match(b)


def _is_boundary(text: str, start: int, end: int) -> bool:
    left_ok = start == 0 or not _joins(text[start - 1], text[start])
    right_ok = end == len(text) or not _joins(text[end - 1], text[end])
    return left_ok and right_ok


def _occurrences(haystack: str, needle: str) -> list[int]:
    out, pos = [], haystack.find(needle)
    while pos != -1:
        out.append(pos)
        pos = haystack.find(needle, pos + 1)
    return out


def _overlaps(start: int, end: int, taken: set[tuple[int, int]]) -> bool:
    return any(start < e and s < end for s, e in taken)


def _pick(text: str, starts: list[int], length: int, taken: set[tuple[int, int]], whole_word: bool,
          after: int = 0) -> int | None:
    """The first occurrence not in ``taken`` (only whole-word ones when ``whole_word``), preferring
    occurrences that overlap no taken span ("Paris" beside a grounded "Paris Hilton" is the other
    one), then occurrences at or after ``after`` (outputs usually follow the text's order)."""
    free = [s for s in starts if (s, s + length) not in taken and (not whole_word or _is_boundary(text, s, s + length))]
    if not free:
        return None
    ordered = [s for s in free if s >= after] + [s for s in free if s < after]
    return next((s for s in ordered if not _overlaps(s, s + length, taken)), ordered[0])


def ground(text: str, span: str, *, taken: Iterable[tuple[int, int]] = (), after: int = 0,
           fuzzy_threshold: float = 0.8) -> Alignment:
    """Locate ``span`` in ``text``: exact, then case-insensitive, then whitespace-insensitive, then fuzzy.

    ``taken`` holds offsets already given to earlier mentions, so a span the model lists twice
    is tied to two different occurrences when the text has them; ``after`` is where the previous
    mention of the output stood, a tie-breaker between occurrences. The fuzzy step searches
    candidate regions only, so a span costs a few linear passes over the text, megabytes included.
    """
    return _ground(_Index(text), span, set(taken), after, fuzzy_threshold)


def _ground(index: _Index, span: str, taken: set[tuple[int, int]], after: int, threshold: float) -> Alignment:
    query = span.strip()
    if not query:
        return Alignment(span, None, None, AlignmentStatus.NOT_FOUND, 0.0, "none")
    found = _ground_free(index, span, query, taken, after)
    if found is None and taken:  # every occurrence is used: a repeated mention of the same one
        found = _ground_free(index, span, query, set(), after)
    if found is None:
        found = _fuzzy(index, span, query, taken, threshold)
    return found


def _ground_free(index: _Index, span: str, query: str, taken: set[tuple[int, int]], after: int) -> Alignment | None:
    """Exact, case-insensitive or whitespace-insensitive occurrences outside ``taken``."""
    text = index.text
    exact = _occurrences(text, query)
    folded_query = query.casefold()
    # casefold can change lengths (ß -> ss); offsets are then unreliable, so skip that stage
    folded = _occurrences(index.folded, folded_query) if index.folded is not None else []
    for whole_word in (True, False):  # a whole word of any case beats a piece of a longer word
        start = _pick(text, exact, len(query), taken, whole_word, after)
        if start is not None:
            return Alignment(span, start, start + len(query), AlignmentStatus.EXACT, 1.0, "exact")
        start = _pick(text, folded, len(folded_query), taken, whole_word, after)
        if start is not None:
            return Alignment(span, start, start + len(folded_query), AlignmentStatus.FUZZY, 1.0, "casefold")
        if not whole_word:
            break
        # whitespace differences ("New York" vs "New  York", "U.S ." vs "U.S."): match unit sequences
        found = _whitespace(index, query, taken)
        if found is not None:
            return Alignment(span, *found, AlignmentStatus.FUZZY, 1.0, "whitespace")
    return None


def _whitespace(index: _Index, query: str, taken: set[tuple[int, int]]) -> tuple[int, int] | None:
    """The first run of units equal to the query's, case-folded, that overlaps no taken span."""
    q = _normalise(query)
    if not q:
        return None
    units = index.units
    needle, last = f" {q} ", q.count(" ")
    pos = units.joined.find(needle)
    while pos != -1:
        i = bisect_left(units.offsets, pos + 1)
        s, e = units.starts[i], units.ends[i + last]
        if (s, e) not in taken and not _overlaps(s, e, taken):
            return s, e
        pos = units.joined.find(needle, pos + 1)
    return None


def _fuzzy(index: _Index, span: str, query: str, taken: set[tuple[int, int]], threshold: float) -> Alignment:
    """The window of units most similar to the query (rapidfuzz ratio, case-folded), if above threshold.

    Only windows whose length allows the threshold are scored (a ratio of ``t`` needs a length
    within ``[t / (2 - t), (2 - t) / t]`` times the query's). A text small enough is searched
    window by window; a longer one only in candidate regions (:func:`_chunk_regions`,
    :func:`_word_regions`), each window by window, or for long queries by local search from the
    region's middle (:func:`_climb`). The cost is bounded by the constants above: a few C passes
    over the text and its vocabulary, plus work per candidate.
    """
    text, units = index.text, index.units
    target = query.casefold()
    starts, ends, n = units.starts, units.ends, len(units.starts)
    if not n:
        return Alignment(span, None, None, AlignmentStatus.NOT_FOUND, 0.0, "none")
    t = min(max(threshold, 0.5), 1.0)
    longest = floor(len(target) * (2 - t) / t)
    shortest = ceil(len(target) * t / (2 - t)) // (1 if index.folded is not None else 3)
    slack = longest - len(target) + 2  # how far insertions and deletions can shift the start
    cost = ((longest - shortest) * n / max(1, len(text)) + 1) * len(target)  # characters compared per start

    scores: dict[tuple[int, int], float] = {}

    def score(i: int, j: int) -> float:
        if (i, j) not in scores:
            s, e = starts[i], ends[j]
            scores[i, j] = -1.0 if (s, e) in taken else fuzz.ratio(target, text[s:e].casefold()) / 100
        return scores[i, j]

    if n * cost <= _EXHAUSTIVE:
        seeds = [(0, n - 1)]
    else:
        seeds = _chunk_regions(index, target, longest, slack) + _word_regions(index, query, len(taken))
    small = {(lo, hi) for lo, hi in seeds if (hi - lo + 1) * cost <= _EXHAUSTIVE}
    for lo, hi in _merge(list(small), n):
        for i in range(lo, hi + 1):
            if len(scores) > _WINDOWS:
                break
            for j in range(max(i, bisect_left(ends, starts[i] + shortest)), bisect_right(ends, starts[i] + longest)):
                score(i, j)
    for lo, hi in dict.fromkeys(seeds):  # long queries, or past the budget: local search from the middle
        if (lo, hi) not in small or len(scores) > _WINDOWS:
            i = min(n - 1, max(0, (lo + hi) // 2))
            _climb(i, max(i, min(n - 1, bisect_left(ends, starts[i] + len(target)))), n, score)
    if not scores:
        return Alignment(span, None, None, AlignmentStatus.NOT_FOUND, 0.0, "none")
    (i, j), ratio = max(scores.items(), key=lambda kv: (kv[1], kv[0][0] - kv[0][1], -starts[kv[0][0]]))
    if ratio >= threshold:
        return Alignment(span, starts[i], ends[j], AlignmentStatus.FUZZY, round(ratio, 4), "fuzzy")
    return Alignment(span, None, None, AlignmentStatus.NOT_FOUND, round(max(ratio, 0.0), 4), "none")


def _chunk_regions(index: _Index, target: str, longest: int, slack: int) -> list[tuple[int, int]]:
    """Window-start ranges around the best partial alignments of the query in the text.

    The text is cut into overlapping chunks and rapidfuzz scores each by ``partial_ratio`` (its
    best query-length substring, searched in C): one linear pass. The alignments in the best
    chunks, widened by ``slack`` for insertions and deletions, are candidates. A query longer
    than 64 characters is aligned by three 64-character pieces (start, middle, end): rapidfuzz's
    fast bit-parallel path stops there, and a whole long query would cost seconds per megabyte.
    Short queries tie with pieces of longer words here ("dulle" / "schedule"), hence
    :func:`_word_regions`.
    """
    source, starts = index.folded or index.text, index.units.starts
    if len(target) <= 64:
        pieces, overlap = [(0, target)], longest + 2
    else:
        pieces, overlap = [(k, target[k:k + 64]) for k in (0, (len(target) - 64) // 2, len(target) - 64)], 128
    step = max(_CHUNK, 4 * overlap)
    chunks = [source[i:i + step + overlap] for i in range(0, len(source), step)]
    out = []
    for offset, piece in pieces:
        for _, _, k in process.extract(piece, chunks, scorer=fuzz.partial_ratio, processor=None, limit=_REGIONS):
            at = k * step + fuzz.partial_ratio_alignment(piece, chunks[k], processor=None).dest_start - offset
            out.append((bisect_left(starts, at - slack), bisect_right(starts, at + slack) - 1))
    return out


def _word_regions(index: _Index, query: str, n_taken: int) -> list[tuple[int, int]]:
    """Window-start ranges around the first occurrences of text units similar to the query's longest ones.

    A misspelled name is one or two units; matching them against the text's vocabulary (distinct
    units, one rapidfuzz pass) finds "Thai" for "Thaei" where query-length substrings tie.
    """
    words = [w.casefold() for w in _unit_re().findall(query)]
    units, reach = index.units, 1 + len(words) // 4
    out = []
    for word in sorted({w for w in words if len(w) > 1}, key=lambda w: (-len(w), w))[:_WORDS]:
        before = words.index(word)
        for key, _, _ in process.extract(word, list(index.vocabulary), scorer=fuzz.ratio, processor=None,
                                         limit=_SIMILAR, score_cutoff=60):
            i, count = index.vocabulary[key]
            pos = units.offsets[i] - 1
            for k in range(min(count, _PLACES + n_taken)):
                if k:  # the next occurrence: the scan stops there, never runs to the end of the text
                    pos = units.joined.find(f" {key} ", pos + 1)
                    i = bisect_left(units.offsets, pos + 1)
                out.append((i - before - reach, i - before + reach))
    return out


def _merge(ranges: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """Unit ranges clipped to ``0..n-1``, overlapping ones merged."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted((max(0, lo), min(n - 1, hi)) for lo, hi in ranges):
        if lo > hi:
            continue
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _climb(i: int, j: int, n: int, score: Callable[[int, int], float]) -> None:
    """Local search for long queries: the windows within two units of ``(i, j)``, then moves of
    either end by one unit while the ratio improves."""
    around = [(i + di, j + dj) for di in range(-2, 3) for dj in range(-2, 3) if 0 <= i + di <= j + dj < n]
    i, j = max(around, key=lambda k: score(*k))
    best = score(i, j)
    for _ in range(n):
        moves = [(i + di, j + dj) for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1)) if 0 <= i + di <= j + dj < n]
        step = max(moves, key=lambda k: score(*k), default=None)
        if step is None or score(*step) <= best:
            break
        (i, j), best = step, score(*step)


def ground_all(text: str, spans: Sequence[str], *, groups: Sequence[int] | None = None,
               fuzzy_threshold: float = 0.8) -> list[Alignment]:
    """Ground the spans of one output in their order, giving repeated mentions distinct occurrences.

    Each span prefers words no earlier span holds, then occurrences after the previous span's
    (model outputs, like gold linearizations, mostly follow the text's order). ``groups`` marks
    spans from separate outputs of one record (e.g. one question per type): the order restarts
    with each group, the words held carry over. The text is indexed once for all the spans.
    """
    index = _Index(text)
    taken: set[tuple[int, int]] = set()
    out = []
    after = 0
    for i, span in enumerate(spans):
        if groups is not None and i and groups[i] != groups[i - 1]:
            after = 0
        a = _ground(index, span, taken, after, fuzzy_threshold)
        if a.found:
            taken.add((a.start, a.end))  # type: ignore[arg-type]
            after = a.start  # type: ignore[assignment]
        out.append(a)
    return out
