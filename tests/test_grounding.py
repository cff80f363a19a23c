from __future__ import annotations

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
