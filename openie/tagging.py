"""Token tag schemes (BIO, IOB1, BILOU / BIOES): decode tag sequences into spans and back.

Token-level corpora annotate entities as one tag per token; records keep character offsets.
This module is the one place that knows how a tag sequence means spans, so readers, writers and
metrics agree on it. Spans are ``(start_token, end_token_exclusive, label)``.

Decoding is lenient by default, like ``conlleval``: a tag that cannot continue the open span
(``I-X`` after ``O`` or after another type, ``L-X`` without a ``B-X``) starts a new span instead of
failing, because released corpora contain such sequences and dropping them would lose gold
entities. With ``strict=True`` every such sequence is an error, for validating files one writes.
Lenient BIO and IOB1 decode alike; the schemes differ in what is *valid* and in how spans are
*encoded* (IOB1 starts a span with ``I-`` and uses ``B-`` only between adjacent spans of one type).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from openie.errors import DataFormatError

SCHEMES: tuple[str, ...] = ("bio", "iob1", "bilou", "bioes")
"""Schemes that can decode and encode; ``"auto"`` may also be passed to the decoder."""

SCHEME_ALIASES: dict[str, str] = {"iob2": "bio", "bieos": "bioes"}

_PREFIXES: dict[str, frozenset[str]] = {
    "bio": frozenset("BI"),
    "iob1": frozenset("BI"),
    # BIOES writes E/S where BILOU writes L/U; both spellings decode in either scheme.
    "bilou": frozenset("BILUES"),
    "bioes": frozenset("BILUES"),
}
_CANONICAL_PREFIX = {"E": "L", "S": "U"}

Span = tuple[int, int, str]


class TagSequenceError(DataFormatError):
    """A tag sequence that cannot be decoded; ``token_index`` lets a reader name the file line."""

    def __init__(self, message: str, token_index: int):
        self.token_index = token_index
        super().__init__(f"token {token_index}: {message}")


def normalize_scheme(scheme: str, *, allow_auto: bool = False) -> str:
    """The canonical scheme name, or a ValueError that lists the known ones."""
    name = SCHEME_ALIASES.get(scheme.lower(), scheme.lower()) if isinstance(scheme, str) else scheme
    if name in SCHEMES or (allow_auto and name == "auto"):
        return name
    known = list(SCHEMES) + list(SCHEME_ALIASES) + (["auto"] if allow_auto else [])
    raise ValueError(f"unknown tag scheme {scheme!r}; known schemes: {', '.join(known)}")


def split_tag(tag: str, index: int = 0) -> tuple[str, str] | None:
    """``"B-creative-work"`` -> ``("B", "creative-work")``; ``"O"`` -> None (labels may hold hyphens)."""
    if tag == "O":
        return None
    prefix, sep, label = tag.partition("-")
    if not sep or len(prefix) != 1 or not label:
        raise TagSequenceError(f"malformed tag {tag!r} (expected O or PREFIX-LABEL such as B-person)", index)
    return prefix, label


def detect_scheme(tags: Iterable[str]) -> str:
    """Guess the scheme of a tag sequence (several sentences may be joined with ``"O"`` between them).

    L/U tags mean BILOU, E/S tags BIOES; an ``I-X`` that opens a span (first token, after ``O`` or
    after another type) means IOB1; anything else is BIO. An all-``O`` sequence is BIO.
    """
    prefixes: set[str] = set()
    opens_with_i = False
    previous: tuple[str, str] | None = None
    for i, tag in enumerate(tags):
        parsed = split_tag(tag, i)
        if parsed is not None:
            if parsed[0] not in "BILUES":
                raise TagSequenceError(f"cannot detect tag scheme: tag {tag!r} has unknown prefix {parsed[0]!r}", i)
            prefixes.add(parsed[0])
            if parsed[0] == "I" and (previous is None or previous[1] != parsed[1]):
                opens_with_i = True
        previous = parsed
    if prefixes & {"L", "U"}:
        return "bilou"
    if prefixes & {"E", "S"}:
        return "bioes"
    return "iob1" if opens_with_i else "bio"


def tags_to_spans(tags: Sequence[str], scheme: str = "bio", *, strict: bool = False) -> list[Span]:
    """Decode one sentence's tags into ``(start, end_exclusive, label)`` spans, in order.

    Raises ``TagSequenceError`` (a ``DataFormatError``) naming the offending token index for a tag
    whose prefix the scheme does not have, and, when ``strict``, for an invalid sequence.
    """
    scheme = normalize_scheme(scheme, allow_auto=True)
    if scheme == "auto":
        scheme = detect_scheme(tags)
    allowed = _PREFIXES[scheme]
    spans: list[Span] = []
    open_start: int | None = None
    open_label: str | None = None

    def close(end: int) -> None:
        nonlocal open_start, open_label
        if open_start is not None and open_label is not None:
            spans.append((open_start, end, open_label))
        open_start, open_label = None, None

    def fail(message: str, index: int) -> None:
        raise TagSequenceError(f"{message} (strict {scheme})", index)

    bilou = scheme in ("bilou", "bioes")
    for i, tag in enumerate(tags):
        parsed = split_tag(tag, i)
        if parsed is None:
            if strict and bilou and open_start is not None:
                fail(f"'O' inside the {open_label} span opened at token {open_start} (no L-/E- closed it)", i)
            close(i)
            continue
        prefix, label = parsed
        if prefix not in allowed:
            raise TagSequenceError(
                f"tag {tag!r} has prefix {prefix!r}, which scheme {scheme!r} does not use "
                f"(allowed: {', '.join(sorted(allowed))}, O)", i)
        prefix = _CANONICAL_PREFIX.get(prefix, prefix)
        continues = open_start is not None and open_label == label
        if prefix == "B":
            if strict and bilou and open_start is not None:
                fail(f"{tag!r} opens a span while the {open_label} span from token {open_start} is unclosed", i)
            if strict and scheme == "iob1" and not continues:
                fail(f"{tag!r} does not follow a {label} token (IOB1 uses B- only between adjacent spans)", i)
            close(i)
            open_start, open_label = i, label
        elif prefix == "I":
            if not continues:
                if strict and scheme != "iob1":
                    fail(f"{tag!r} follows {'the start' if i == 0 else repr(tags[i - 1])}, not a {label} span", i)
                close(i)
                open_start, open_label = i, label
        elif prefix == "L":
            if not continues:
                if strict:
                    fail(f"{tag!r} closes a span that was never opened with B-{label}", i)
                close(i)
                open_start, open_label = i, label
            close(i + 1)
        else:  # "U": a single-token span
            if strict and open_start is not None:
                fail(f"{tag!r} while the {open_label} span from token {open_start} is unclosed", i)
            close(i)
            spans.append((i, i + 1, label))
    if strict and bilou and open_start is not None:
        fail(f"sentence ends inside the {open_label} span opened at token {open_start}", len(tags) - 1)
    close(len(tags))
    return spans


def spans_to_tags(spans: Iterable[Sequence], n_tokens: int, scheme: str = "bio") -> list[str]:
    """Encode non-overlapping ``(start, end_exclusive, label)`` token spans as one tag per token."""
    scheme = normalize_scheme(scheme)
    ordered = sorted((int(s), int(e), str(label)) for s, e, label in spans)
    tags = ["O"] * n_tokens
    previous: Span | None = None
    for start, end, label in ordered:
        if not (0 <= start < end <= n_tokens):
            raise ValueError(f"span ({start}, {end}, {label!r}) is empty or outside 0..{n_tokens} tokens")
        if previous is not None and start < previous[1]:
            raise ValueError(f"spans {previous} and {(start, end, label)} overlap; tags cannot encode nesting")
        if scheme == "bio":
            tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
        elif scheme == "iob1":
            adjacent_same = previous is not None and previous[1] == start and previous[2] == label
            tags[start:end] = [f"{'B' if adjacent_same else 'I'}-{label}"] + [f"I-{label}"] * (end - start - 1)
        else:
            single, last = ("U", "L") if scheme == "bilou" else ("S", "E")
            if end - start == 1:
                tags[start] = f"{single}-{label}"
            else:
                tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 2) + [f"{last}-{label}"]
        previous = (start, end, label)
    return tags
