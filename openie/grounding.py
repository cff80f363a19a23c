"""Grounding: find where a span a model wrote actually stands in the input.

Models paraphrase, change case and drop spaces; every predicted annotation is tied back to
character offsets with a status saying how trustworthy the tie is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import StrEnum

_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


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


def _is_boundary(text: str, start: int, end: int) -> bool:
    left_ok = start == 0 or not (text[start - 1].isalnum() and text[start].isalnum())
    right_ok = end == len(text) or not (text[end - 1].isalnum() and text[end].isalnum())
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
    free.sort(key=lambda s: (_overlaps(s, s + length, taken), s < after, s))
    return free[0] if free else None


def ground(text: str, span: str, *, taken: Iterable[tuple[int, int]] = (), after: int = 0,
           fuzzy_threshold: float = 0.8) -> Alignment:
    """Locate ``span`` in ``text``: exact, then case-insensitive, then whitespace-insensitive, then fuzzy.

    ``taken`` holds offsets already given to earlier mentions, so a span the model lists twice
    is tied to two different occurrences when the text has them; ``after`` is where the previous
    mention of the output stood, a tie-breaker between occurrences.
    """
    query = span.strip()
    if not query:
        return Alignment(span, None, None, AlignmentStatus.NOT_FOUND, 0.0, "none")
    taken = set(taken)
    found = _ground_free(text, span, query, taken, after)
    if found is None and taken:  # every occurrence is used: a repeated mention of the same one
        found = _ground_free(text, span, query, set(), after)
    if found is None:
        found = _fuzzy(text, span, query, list(_WORD.finditer(text)), taken, fuzzy_threshold)
    return found


def _ground_free(text: str, span: str, query: str, taken: set[tuple[int, int]], after: int) -> Alignment | None:
    """Exact, case-insensitive or whitespace-insensitive occurrences outside ``taken``."""
    exact = _occurrences(text, query)
    # casefold can change lengths (ß -> ss); offsets are then unreliable, so skip that stage
    folded = _occurrences(text.casefold(), query.casefold()) if len(text.casefold()) == len(text) else []
    for whole_word in (True, False):  # a whole word of any case beats a piece of a longer word
        start = _pick(text, exact, len(query), taken, whole_word, after)
        if start is not None:
            return Alignment(span, start, start + len(query), AlignmentStatus.EXACT, 1.0, "exact")
        start = _pick(text, folded, len(query), taken, whole_word, after)
        if start is not None:
            return Alignment(span, start, start + len(query), AlignmentStatus.FUZZY, 1.0, "casefold")
        if not whole_word:
            break
        # whitespace differences ("New York" vs "New  York", "U.S ." vs "U.S."): match word sequences
        words = list(_WORD.finditer(text))
        qwords = [w.casefold() for w in _WORD.findall(query)]
        lowered = [m.group().casefold() for m in words]
        for i in range(len(words) - len(qwords) + 1 if qwords else 0):
            if lowered[i:i + len(qwords)] == qwords:
                s, e = words[i].start(), words[i + len(qwords) - 1].end()
                if (s, e) not in taken and not _overlaps(s, e, taken):
                    return Alignment(span, s, e, AlignmentStatus.FUZZY, 1.0, "whitespace")
    return None


def _fuzzy(text: str, span: str, query: str, words: Sequence[re.Match[str]], taken: set[tuple[int, int]],
           threshold: float) -> Alignment:
    """Best window of input words by character similarity (difflib ratio), if above threshold."""
    n_query = max(1, len(_WORD.findall(query)))
    target = query.casefold()
    best: tuple[float, int, int] | None = None
    for width in range(max(1, n_query - 1), n_query + 2):
        for i in range(len(words) - width + 1):
            s, e = words[i].start(), words[i + width - 1].end()
            if (s, e) in taken:
                continue
            ratio = SequenceMatcher(None, target, text[s:e].casefold(), autojunk=False).ratio()
            if best is None or ratio > best[0]:
                best = (ratio, s, e)
    if best is not None and best[0] >= threshold:
        return Alignment(span, best[1], best[2], AlignmentStatus.FUZZY, round(best[0], 4), "fuzzy")
    return Alignment(span, None, None, AlignmentStatus.NOT_FOUND, round(best[0], 4) if best else 0.0, "none")


def ground_all(text: str, spans: Sequence[str], *, groups: Sequence[int] | None = None,
               fuzzy_threshold: float = 0.8) -> list[Alignment]:
    """Ground the spans of one output in their order, giving repeated mentions distinct occurrences.

    Each span prefers words no earlier span holds, then occurrences after the previous span's
    (model outputs, like gold linearizations, mostly follow the text's order). ``groups`` marks
    spans from separate outputs of one record (e.g. one question per type): the order restarts
    with each group, the words held carry over.
    """
    taken: set[tuple[int, int]] = set()
    out = []
    after = 0
    for i, span in enumerate(spans):
        if groups is not None and i and groups[i] != groups[i - 1]:
            after = 0
        a = ground(text, span, taken=taken, after=after, fuzzy_threshold=fuzzy_threshold)
        if a.found:
            taken.add((a.start, a.end))  # type: ignore[arg-type]
            after = a.start  # type: ignore[assignment]
        out.append(a)
    return out
