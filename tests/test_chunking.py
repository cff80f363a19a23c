from __future__ import annotations

import re

import pytest

from openie.chunking import chunk_record, chunk_text, merge_chunks
from openie.records import Entity, Record


def _long_record() -> Record:
    words = [f"w{i}" for i in range(100)]
    for i in range(0, 100, 7):
        words[i] = f"Name{i}"
    text = " ".join(words)
    ents = [Entity(m.start(), m.end(), "person", m.group()) for m in re.finditer(r"Name\d+", text)]
    return Record("doc", text, entities=ents)


def test_chunks_cover_text_and_ownership_partitions_it():
    text = _long_record().text
    chunks = chunk_text(text, max_words=20, overlap_words=5)
    assert chunks[0].start == 0 and chunks[-1].end == len(text)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert b.start < a.end  # overlap
        assert a.own_end == b.own_start
    assert chunks[0].own_start == 0 and chunks[-1].own_end == len(text)
    assert all(c.text == text[c.start:c.end] and len(c.text.split()) <= 20 for c in chunks)


def test_merge_returns_global_offsets_without_duplicates():
    rec = _long_record()
    pairs = chunk_record(rec, max_words=20, overlap_words=6)
    preds = []
    for _chunk, sub in pairs:
        # a perfect per-chunk extractor: every NameN fully inside the chunk
        ents = [Entity(m.start(), m.end(), "person", m.group()) for m in re.finditer(r"Name\d+", sub.text)]
        preds.append(Record(sub.id, sub.text, entities=ents))
    merged = merge_chunks(rec, [c for c, _ in pairs], preds)
    assert merged.entities == sorted(rec.entities)
    assert merged.check_offsets() == []


def test_token_count_function_shrinks_windows():
    text = " ".join(["abcdefgh"] * 30)
    chunks = chunk_text(text, max_words=10, overlap_words=2, count=lambda s: len(s) // 4)
    assert all(len(c.text) // 4 <= 10 for c in chunks) and chunks[-1].end == len(text)


def test_short_and_empty_texts_are_one_chunk():
    assert len(chunk_text("just a few words", 10, 2)) == 1
    assert chunk_text("", 10, 2)[0].text == ""


def test_bad_parameters():
    with pytest.raises(ValueError):
        chunk_text("a b", 5, 5)
