from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rapidfuzz import fuzz

from openie.grounding import AlignmentStatus, ground, ground_all

TEXT = "Barack Obama met obama in New  York and the US. U.S. Obamacare"


def test_exact_match_prefers_whole_words():
    a = ground(TEXT, "US")
    assert (a.start, a.end, a.status) == (44, 46, AlignmentStatus.EXACT)
    assert TEXT[a.start:a.end] == "US"


def test_case_whitespace_and_fuzzy_are_fuzzy():
    assert ground(TEXT, "OBAMA").method == "casefold"
    ws = ground(TEXT, "New York")
    assert ws.status is AlignmentStatus.FUZZY and TEXT[ws.start:ws.end] == "New  York"
    fz = ground(TEXT, "Barak Obama")
    assert fz.method == "fuzzy" and TEXT[fz.start:fz.end] == "Barack Obama" and 0.8 <= fz.similarity < 1


def test_not_found():
    a = ground(TEXT, "Paris")
    assert a.status is AlignmentStatus.NOT_FOUND and a.start is None and not a.found
    assert not ground(TEXT, "   ").found


def test_repeated_mentions_take_distinct_occurrences_then_reuse():
    starts = [a.start for a in ground_all(TEXT, ["Obama", "Obama", "Obama", "Obama"])]
    # whole words first (any case), then the piece of "Obamacare", then a repeat
    assert starts == [7, 17, 53, 7]


def test_threshold_controls_fuzzy():
    assert not ground("the cat sat", "the dog sat", fuzzy_threshold=0.95).found
    assert ground("the cat sat", "the dog sat", fuzzy_threshold=0.5).found


def test_short_span_avoids_words_held_by_a_longer_one():
    text = "Paris Hilton flew to Paris ."
    got = ground_all(text, ["Paris Hilton", "Paris"])
    assert [(a.start, a.end) for a in got] == [(0, 12), (21, 26)]


def test_occurrences_follow_output_order_and_groups_restart_it():
    text = "Georgia said Abkhazia and Georgia agreed ."
    # the output lists Abkhazia, then Georgia: the Georgia after Abkhazia is meant
    assert [a.start for a in ground_all(text, ["Abkhazia", "Georgia"])] == [13, 26]
    # a new group (another question) starts again from the beginning of the text
    assert [a.start for a in ground_all(text, ["Abkhazia", "Georgia"], groups=[0, 1])] == [13, 0]


# --- any script, long texts, bounded fuzzy search -------------------------------------------------

def test_scripts_without_spaces_match_by_character():
    # a piece of a run of kana or Thai is a whole unit sequence there, so it is an exact match
    assert ground("東京タワーに行きました", "タワー").method == "exact"
    assert ground("ภาษาไทยกินข้าวแล้ว", "กินข้าว").method == "exact"
    ws = ground("我在北京大学读书", "北京 大学")
    assert (ws.start, ws.end, ws.method) == (2, 6, "whitespace")


def test_case_folding_that_lengthens_the_query_keeps_the_whole_match():
    a = ground("STRASSE in Berlin", "Straße")
    assert (a.start, a.end, a.method) == (0, 7, "casefold")


def test_paraphrased_chinese_span_is_grounded_at_character_level():
    text = "昨天下午，国家航天局在北京宣布嫦娥七号探测器将于明年八月发射升空。专家表示这是一项重要的进展。"
    a = ground(text, "国家航天局宣布嫦娥七号探测器明年八月发射")
    assert a.method == "fuzzy" and 0.8 <= a.similarity < 1
    # from the first character of the span to the last, not the whole clause between punctuation
    assert text[a.start:a.end] == "国家航天局在北京宣布嫦娥七号探测器将于明年八月发射"


def _filler(n_chars: int, seed: int) -> str:
    rng = random.Random(seed)
    words = ["the", "their", "said", "minister", "market", "shares", "Thais", "rose", "percent", "in", "on",
             "Monday", "government", "officials", "told", "Reuters", "Obamacare", "policy", "a", "of", "."]
    out, size = [], 0
    while size < n_chars:
        out.append(rng.choice(words))
        size += len(out[-1]) + 1
    return " ".join(out)


def test_misspelled_names_are_found_in_a_long_text():
    head, tail = _filler(30_000, 1), _filler(30_000, 2)
    text = f"{head} Barack Obama visited the Thai capital . {tail}"
    at = len(head) + 1
    a = ground(text, "Barak Obamma")
    assert (a.start, a.end, a.method) == (at, at + len("Barack Obama"), "fuzzy")
    # a short name whose query-length substrings tie with thousands of "their"
    thai = text.index("Thai ")
    b = ground(text, "Thaei")
    assert (b.start, b.end, b.method) == (thai, thai + 4, "fuzzy")


def test_long_span_with_typos_is_found_by_its_pieces():
    target = _filler(1_500, 7)
    head = _filler(200_000, 8)
    text = f"{head} {target} ."
    query = target.replace("government", "govermnent").replace("minister", "ministre")
    a = ground(text, query)
    assert (a.start, a.end, a.method) == (len(head) + 1, len(head) + 1 + len(target), "fuzzy")


def test_span_with_a_typo_in_a_megabyte_text():
    head, tail = _filler(1_000_000, 3), _filler(5_000, 4)
    target = "International Atomic Energy Agency"
    text = f"{head} {target} {tail}"
    a = ground(text, "Internatonal Atomik Energy Agency")
    assert (a.start, a.end, a.method) == (len(head) + 1, len(head) + 1 + len(target), "fuzzy")
    assert ground_all(text, ["Reuters", "Internatonal Atomik Energy Agency"])[1].start == len(head) + 1


# --- properties over random texts in any script ---------------------------------------------------

# spaced and unspaced scripts, combining marks, case folds that change lengths, emoji pieces
_CHARS = (list("abcXYZ ,.-'\n\t") + list("北京大学人工智能の東京タワー") + list("ภาษาไทยกินข้าว") + list("한국어")
          + ["\u0301", "\u0308", "\u0e34", "ß", "İ", "ﬁ", "😀", "👍", "\U0001f3fd", "\u200d", "\ufe0f", "🇫", "🇷", "$"])
_TEXT = st.text(st.sampled_from(_CHARS) | st.characters(exclude_categories=("Cs",)), max_size=40)
_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _long(text: str, repeat: int) -> str:
    """Repeated, so that the fuzzy step searches candidate regions rather than every window."""
    return text if repeat == 1 else " ".join(f"{text} {i}" for i in range(repeat))


def _check(text: str, span: str, a, threshold: float = 0.8) -> None:
    query = span.strip()
    if not a.found:
        assert a.start is None and a.end is None and a.method == "none"
        return
    assert 0 <= a.start < a.end <= len(text)
    got = text[a.start:a.end]
    if a.status is AlignmentStatus.EXACT:
        assert got == query
    elif a.method == "casefold":
        assert got.casefold() == query.casefold()
    elif a.method == "whitespace":
        assert "".join(got.split()).casefold() == "".join(query.split()).casefold()
    else:
        assert a.method == "fuzzy" and a.status is AlignmentStatus.FUZZY
        ratio = fuzz.ratio(query.casefold(), got.casefold()) / 100
        assert ratio >= threshold and a.similarity == round(ratio, 4)
        assert not got[0].isspace() and not got[-1].isspace()


@_SETTINGS
@given(_TEXT, st.data(), st.sampled_from([1, 150]))
def test_a_span_cut_from_the_text_is_found(text, data, repeat):
    text = _long(text, repeat)
    i = data.draw(st.integers(0, len(text)))
    j = data.draw(st.integers(i, min(len(text), i + 30)))
    span = text[i:j]
    a = ground(text, span)
    assert a.found == bool(span.strip())
    assert a.method in ("exact", "casefold", "whitespace", "none")
    _check(text, span, a)


@_SETTINGS
@given(_TEXT, st.data(), st.sampled_from([1, 150]), st.sampled_from([0.6, 0.8, 0.9]))
def test_edited_and_unrelated_spans_are_fuzzy_above_threshold_or_not_found(text, data, repeat, threshold):
    text = _long(text, repeat)
    i = data.draw(st.integers(0, len(text)))
    span = text[i:data.draw(st.integers(i, min(len(text), i + 30 if repeat == 1 else i + 300)))]
    at = data.draw(st.integers(0, len(span)))
    edit = data.draw(st.sampled_from(["insert", "delete", "replace", "unrelated"]))
    extra = data.draw(st.text(st.sampled_from(_CHARS), min_size=1, max_size=3))
    span = {"insert": span[:at] + extra + span[at:], "delete": span[:at] + span[at + 1:],
            "replace": span[:at] + extra + span[at + 1:], "unrelated": extra + data.draw(_TEXT)}[edit]
    _check(text, span, ground(text, span, fuzzy_threshold=threshold), threshold)


@_SETTINGS
@given(_TEXT, st.lists(st.tuples(st.integers(0, 40), st.integers(0, 8), st.booleans()), max_size=6),
       st.sampled_from([1, 60]))
def test_ground_all_is_ground_in_order_with_taken_and_after(text, cuts, repeat):
    text = _long(text, repeat)
    spans = [text[i:i + n] + ("x" if typo else "") for i, n, typo in cuts]
    taken: set[tuple[int, int]] = set()
    after, expected = 0, []
    for span in spans:
        a = ground(text, span, taken=taken, after=after)
        if a.found:
            taken.add((a.start, a.end))
            after = a.start
        expected.append(a)
        _check(text, span, a)
    assert ground_all(text, spans) == expected
