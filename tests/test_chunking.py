from __future__ import annotations

import random
import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openie.chunking import MAX_UNIT_CHARS, chunk_record, chunk_text, merge_chunks, text_units
from openie.records import Entity, Record


def _long_record() -> Record:
    words = [f"w{i}" for i in range(100)]
    for i in range(0, 100, 7):
        words[i] = f"Name{i}"
    text = " ".join(words)
    ents = [Entity(m.start(), m.end(), "person", m.group()) for m in re.finditer(r"Name\d+", text)]
    return Record("doc", text, entities=ents)


def _is_cjk(ch: str) -> bool:
    return 0x4E00 <= ord(ch) <= 0x9FFF


def test_chunks_cover_text_and_ownership_partitions_it():
    text = _long_record().text
    chunks = chunk_text(text, max_tokens=20, overlap_tokens=5)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # overlap
        assert a.own_end == b.own_start
        assert len(text[b.start:a.end].split()) == 5
    assert chunks[0].own_start == 0 and chunks[-1].own_end == len(text)
    assert all(c.text == text[c.start:c.end] and len(c.text.split()) <= 20 for c in chunks)


def test_merge_returns_global_offsets_without_duplicates():
    rec = _long_record()
    pairs = chunk_record(rec, max_tokens=20, overlap_tokens=6)
    preds = []
    for _chunk, sub in pairs:
        # a perfect per-chunk extractor: every NameN fully inside the chunk
        ents = [Entity(m.start(), m.end(), "person", m.group()) for m in re.finditer(r"Name\d+", sub.text)]
        preds.append(Record(sub.id, sub.text, entities=ents))
    merged = merge_chunks(rec, [c for c, _ in pairs], preds)
    assert merged.entities == sorted(rec.entities)
    assert merged.check_offsets() == []


def test_positional_arguments_keep_their_order():
    rec = _long_record()
    count = len
    assert chunk_text(rec.text, 20, 5, count=count) == chunk_text(rec.text, max_tokens=20, overlap_tokens=5,
                                                                  count=count)
    assert [c for c, _ in chunk_record(rec, 20, 5, count)] == chunk_text(rec.text, 20, 5, count=count)


def test_token_count_function_shrinks_windows():
    text = " ".join(["abcdefgh"] * 30)
    chunks = chunk_text(text, max_tokens=10, overlap_tokens=2, count=lambda s: len(s) // 4)
    assert all(len(c.text) // 4 <= 10 for c in chunks) and chunks[-1].end == len(text)


def test_short_and_empty_texts_are_one_chunk():
    assert len(chunk_text("just a few words", 10, 2)) == 1
    assert chunk_text("", 10, 2)[0].text == ""
    [c] = chunk_text("  \n ", 10, 2)
    assert (c.start, c.end, c.own_start, c.own_end, c.text) == (0, 4, 0, 4, "  \n ")
    [c] = chunk_text("  two words \n", 20, 2, count=len)
    assert (c.start, c.end, c.text) == (0, 13, "  two words \n")  # the whole text when it fits


def test_bad_parameters():
    for budget, overlap in [(5, 5), (0, 0), (3, -1)]:
        with pytest.raises(ValueError):
            chunk_text("a b", budget, overlap)


def test_units_by_script():
    text = "Hello 東京Tower café e\u0301 สวัสดี 한국어 문장 👨\u200d👩\u200d👧 🇯🇵 " + "x" * 70
    units = [text[s:e] for s, e in text_units(text)]
    assert units[:5] == ["Hello", "東", "京", "Tower", "café"]
    assert "e\u0301" in units  # a mark stays with its base
    assert ["ส", "วั", "ส", "ดี"] == units[6:10]  # Thai: characters with their marks
    assert ["한국어", "문장"] == units[10:12]  # Hangul is written with spaces
    assert "👨\u200d👩\u200d👧" in units and "🇯🇵" in units
    assert units[-3:] == ["x" * 32, "x" * 32, "x" * 6]
    assert all(e - s <= MAX_UNIT_CHARS for s, e in text_units("a" + "\u0301" * 100 + "b" * 40))


def test_chinese_without_spaces_is_cut_by_characters():
    rng = random.Random(0)
    text = "".join(chr(rng.randint(0x4E00, 0x9FFF)) if i % 40 else "。" for i in range(18_000))
    chunks = chunk_text(text, 500, 50)
    assert len(chunks) > 36 and all(len(c.text) <= 500 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(len(text[b.start:a.end]) == 50 for a, b in zip(chunks, chunks[1:], strict=False))


def test_thai_paragraph_is_chunked():
    sentence = "ภาษาไทยเขียนติดกันโดยไม่เว้นวรรคระหว่างคำ แต่เว้นวรรคระหว่างประโยค "
    text = sentence * 40
    chunks = chunk_text(text, 60, 10)
    assert len(chunks) > 10
    for c in chunks:
        assert c.text == text[c.start:c.end] and len(text_units(c.text)) <= 60
        assert unicodedata.category(c.text.lstrip()[0])[0] != "M"  # never cut between a letter and its marks
    covered = {p for c in chunks for p in range(c.start, c.end)}
    assert all(p in covered for p, ch in enumerate(text) if not ch.isspace())


def test_a_unit_over_the_budget_is_cut_by_characters():
    url = "https://example.org/" + "abcdefghij" * 20
    text = f"see {url} now"
    chunks = chunk_text(text, 8, 2, count=lambda s: len(s.encode()))
    assert all(len(c.text.encode()) <= 8 for c in chunks)
    assert "".join(text[c.own_start:c.own_end] for c in chunks) == text
    # one character that alone overcounts is a chunk of its own, the only allowed excess
    chunks = chunk_text("ab 😀 cd", 3, 0, count=lambda s: len(s.encode()))
    assert "😀" in [c.text for c in chunks]
    assert all(len(c.text.encode()) <= 3 for c in chunks if c.text != "😀")


def test_megabyte_of_english_with_a_count():
    rng = random.Random(1)
    vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 10))) for _ in range(5000)]
    text = " ".join(rng.choice(vocab) for _ in range(170_000))
    assert len(text) > 1_000_000
    calls = []

    def count(s: str) -> int:
        calls.append(len(s))
        return len(s.split())

    chunks = chunk_text(text, 256, 32, count=count)
    assert all(len(c.text.split()) <= 256 for c in chunks)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    assert len(chunks) == pytest.approx(170_000 / 224, abs=2)
    assert sum(calls) < 3 * len(text)  # each window counted about once, never growing windows


# -- properties -------------------------------------------------------------------------------

_PIECES = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x41, max_codepoint=0x7A), min_size=1, max_size=45),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=30),
    st.text(alphabet=st.characters(min_codepoint=0x0E01, max_codepoint=0x0E4E), min_size=1, max_size=20),
    st.sampled_from(["😀", "👍🏽", "👨\u200d👩\u200d👧", "🇯🇵", "1\ufe0f\u20e3", "e\u0301", "a" + "\u0301" * 40,
                     "東\U000e0100", "\u200d", "\u0301", "한국어", "ひらがなカタカナ", "，", "。", "https://x.org/a?b=c"]),
    st.sampled_from([" ", "  ", "\n", "\n\n", "\t", "\u3000", "\u00a0", " \r\n "]),
    st.text(min_size=1, max_size=8),
)
_TEXTS = st.lists(_PIECES, max_size=40).map("".join)
_COUNTS = st.sampled_from([None, len, lambda s: len(s.encode()), lambda s: len(s) // 2 + 1,
                           lambda s: len(s.split()) + 2])


@st.composite
def _budgets(draw: st.DrawFn) -> tuple[int, int]:
    budget = draw(st.integers(1, 40))
    return budget, draw(st.integers(0, budget - 1))


def _check(text: str, chunks: list, budget: int, overlap: int, count, aligned: bool = False) -> None:
    assert chunks and [c.index for c in chunks] == list(range(len(chunks)))
    # (b) slices of the text, moving forward
    for c in chunks:
        assert c.text == text[c.start:c.end] and 0 <= c.start <= c.end <= len(text)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start and a.end < b.end
    # (c) ownership partitions the text; what a chunk owns outside itself is whitespace
    assert chunks[0].own_start == 0 and chunks[-1].own_end == len(text)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.own_end == b.own_start
    for c in chunks:
        assert c.own_start <= c.own_end
        assert text[c.own_start:max(c.own_start, c.start)].isspace() or c.own_start >= c.start
        assert text[min(c.own_end, c.end):c.own_end].isspace() or c.own_end <= c.end
    # (d) every non-whitespace character is in a chunk
    covered = [False] * len(text)
    for c in chunks:
        covered[c.start:c.end] = [True] * (c.end - c.start)
    assert all(covered[p] for p, ch in enumerate(text) if not ch.isspace())
    # (a) the budget
    if count is None:
        units = text_units(text)
        unit_starts, unit_ends = {s for s, _ in units}, {e for _, e in units}
        for c in chunks:
            assert sum(c.start <= s and e <= c.end for s, e in units) <= budget
            assert len(c.text.split()) <= budget and sum(map(_is_cjk, c.text)) <= budget
            if units:  # never inside a unit; whitespace at the edges is free
                assert c.start in unit_starts or c.start in unit_ends or c.start == 0
                assert c.end in unit_ends or c.end == len(text)
                assert chunks[0].start == 0 and chunks[-1].end == len(text)
                assert c.own_start >= c.start or c.index == 0
                assert c.own_end <= c.end or c.index == len(chunks) - 1
        for a, b in zip(chunks, chunks[1:], strict=False):
            shared = sum(b.start <= s and e <= a.end for s, e in units)
            assert shared == overlap or (aligned and shared == 0)  # a sentence-aligned cut shares nothing
    else:
        # the exceptions: one character that alone overcounts, and a text without a unit
        assert all(count(c.text) <= budget or len(c.text) == 1 or not text.strip() for c in chunks)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, budgets=_budgets(), count=_COUNTS)
def test_chunk_properties(text: str, budgets: tuple[int, int], count) -> None:
    budget, overlap = budgets
    _check(text, chunk_text(text, budget, overlap, count=count), budget, overlap, count)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, budgets=_budgets(), count=_COUNTS, dots=st.lists(st.integers(0, 10_000), max_size=12))
def test_sentence_aligned_chunk_properties(text: str, budgets: tuple[int, int], count, dots: list[int]) -> None:
    """The same guarantees when chunks end at sentence ends (sentence ends sprinkled into the text)."""
    for d in sorted(dots, reverse=True):
        at = d % (len(text) + 1)
        text = text[:at] + ". " + text[at:]
    budget, overlap = budgets
    _check(text, chunk_text(text, budget, overlap, count=count, align_sentences=True), budget, overlap, count,
           aligned=True)
    _check(text, chunk_text(text, budget, overlap, count=count, one_sentence=True), budget, overlap, count,
           aligned=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_TEXTS, budgets=_budgets(), count=_COUNTS, data=st.data())
def test_merge_keeps_each_entity_once(text: str, budgets: tuple[int, int], count, data: st.DataObject) -> None:
    """(e) entities of a unit within the budget, or of one character, come back once each at their global offsets."""
    budget, overlap = budgets
    spans = [(s, e) for s, e in text_units(text) if count is None or count(text[s:e]) <= budget]
    spans += [(p, p + 1) for p, ch in enumerate(text) if not ch.isspace()]
    chosen = data.draw(st.lists(st.sampled_from(spans), unique=True, max_size=12)) if spans else []
    gold = [Entity(s, e, "thing", text[s:e]) for s, e in chosen]
    record = Record("r", text, entities=gold)
    pairs = chunk_record(record, budget, overlap, count)
    preds = []
    for c, sub in pairs:
        ents = [Entity(g.start - c.start, g.end - c.start, g.label, g.text) for g in gold
                if c.start <= g.start and g.end <= c.end]
        preds.append(Record(sub.id, sub.text, entities=ents))
    merged = merge_chunks(record, [c for c, _ in pairs], preds)
    assert merged.entities == sorted(gold)
    assert merged.check_offsets() == []


def test_aligned_chunks_end_at_sentence_ends_and_touch_without_overlap():
    sentences = [f"Sentence {i} has some words in it ." for i in range(40)]
    text = " ".join(sentences)
    chunks = chunk_text(text, 30, 8, align_sentences=True)
    assert len(chunks) > 1
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.text.rstrip().endswith(".") and b.start == a.end  # whole sentences, no overlap
    assert all(len(c.text.split()) <= 30 for c in chunks)
    assert "".join(text[c.own_start:c.own_end] for c in chunks) == text
    one_line = "a b c d e f g h i j k l m n o p q r s t u v w x y z"  # no sentence end: plain windows
    assert chunk_text(one_line, 8, 2, align_sentences=True) == chunk_text(one_line, 8, 2)
    zh = "北京今天下雨。上海明天晴。" * 20
    assert all(c.text.endswith("。") for c in chunk_text(zh, 20, 4, align_sentences=True)[:-1])
    ones = chunk_text(text, 30, 8, one_sentence=True)  # a chunk per sentence
    assert [c.text.strip() for c in ones] == sentences
