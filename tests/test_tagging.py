"""Tag schemes: decoding, strict validation, encoding, detection."""

from __future__ import annotations

import random

import pytest

from openie.errors import DataFormatError
from openie.tagging import SCHEMES, TagSequenceError, detect_scheme, spans_to_tags, tags_to_spans


def test_bio_decodes_spans_with_hyphenated_labels_and_adjacent_same_type():
    tags = ["B-PER", "I-PER", "O", "B-creative-work", "B-creative-work", "I-creative-work", "B-LOC"]
    assert tags_to_spans(tags) == [(0, 2, "PER"), (3, 4, "creative-work"), (4, 6, "creative-work"), (6, 7, "LOC")]


def test_empty_and_all_outside_sequences_have_no_spans():
    assert tags_to_spans([]) == []
    assert tags_to_spans(["O", "O"], "bilou", strict=True) == []


def test_iob1_and_bio_differ_in_validity_and_encoding_not_in_lenient_decoding():
    iob1_tags = ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    expected = [(0, 2, "PER"), (2, 3, "PER"), (4, 5, "LOC")]
    assert tags_to_spans(iob1_tags, "iob1", strict=True) == expected
    # Lenient BIO reads an I- that opens a span as a new span, like conlleval: same spans.
    assert tags_to_spans(iob1_tags, "bio") == expected
    with pytest.raises(TagSequenceError, match=r"token 0") as err:
        tags_to_spans(iob1_tags, "bio", strict=True)
    assert err.value.token_index == 0
    assert spans_to_tags(expected, 5, "iob1") == iob1_tags
    assert spans_to_tags(expected, 5, "bio") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]


def test_strict_iob1_rejects_b_that_does_not_separate_same_type_spans():
    with pytest.raises(TagSequenceError, match="token 1") as err:
        tags_to_spans(["O", "B-PER"], "iob1", strict=True)
    assert err.value.token_index == 1


def test_bio_i_after_other_type_starts_new_span_unless_strict():
    assert tags_to_spans(["B-PER", "I-LOC", "I-LOC"]) == [(0, 1, "PER"), (1, 3, "LOC")]
    with pytest.raises(DataFormatError, match="token 1"):
        tags_to_spans(["B-PER", "I-LOC"], strict=True)


def test_bilou_decoding_with_bioes_aliases():
    tags = ["U-Loc", "O", "B-Org", "I-Org", "L-Org", "S-Peop", "B-Other", "E-Other"]
    expected = [(0, 1, "Loc"), (2, 5, "Org"), (5, 6, "Peop"), (6, 8, "Other")]
    assert tags_to_spans(tags, "bilou", strict=True) == expected
    assert tags_to_spans(tags, "bioes", strict=True) == expected
    assert spans_to_tags(expected, 8, "bilou") == ["U-Loc", "O", "B-Org", "I-Org", "L-Org", "U-Peop", "B-Other",
                                                   "L-Other"]
    assert spans_to_tags(expected, 8, "bioes")[:2] == ["S-Loc", "O"]


@pytest.mark.parametrize("tags, index", [
    (["B-Org", "O"], 1),            # span never closed before O
    (["B-Org", "I-Org"], 1),        # sentence ends inside a span
    (["O", "L-Org"], 1),            # L without B
    (["B-Org", "U-Loc"], 1),        # U while a span is open
    (["B-Org", "B-Org", "L-Org"], 1),
])
def test_strict_bilou_names_the_offending_token(tags, index):
    with pytest.raises(TagSequenceError) as err:
        tags_to_spans(tags, "bilou", strict=True)
    assert err.value.token_index == index
    assert f"token {index}" in str(err.value)


def test_lenient_bilou_recovers_spans():
    assert tags_to_spans(["B-Org", "O", "L-Loc", "I-Per"], "bilou") == [(0, 1, "Org"), (2, 3, "Loc"), (3, 4, "Per")]


@pytest.mark.parametrize("tag", ["X-PER", "B", "B-", "BB-PER", "per"])
def test_malformed_or_foreign_tags_are_errors_with_token_index(tag):
    with pytest.raises(DataFormatError, match="token 2"):
        tags_to_spans(["O", "B-LOC", tag], "bio")


def test_bilou_prefix_is_an_error_in_bio():
    with pytest.raises(DataFormatError, match=r"token 0.*'U'"):
        tags_to_spans(["U-PER"], "bio")


def test_unknown_scheme_lists_known_schemes():
    with pytest.raises(ValueError, match=r"unknown tag scheme 'bilu'.*bio, iob1, bilou"):
        tags_to_spans(["O"], "bilu")
    with pytest.raises(ValueError, match="unknown tag scheme 'auto'"):
        spans_to_tags([], 1, "auto")


def test_scheme_detection():
    assert detect_scheme(["B-PER", "I-PER", "O"]) == "bio"
    assert detect_scheme(["O", "I-PER", "B-PER"]) == "iob1"
    assert detect_scheme(["U-PER", "B-LOC", "L-LOC"]) == "bilou"
    assert detect_scheme(["S-PER"]) == "bioes"
    assert detect_scheme(["O"]) == "bio"
    assert tags_to_spans(["I-PER", "B-PER"], "auto", strict=True) == [(0, 1, "PER"), (1, 2, "PER")]


def test_spans_to_tags_rejects_overlap_and_out_of_range():
    with pytest.raises(ValueError, match="overlap"):
        spans_to_tags([(0, 2, "A"), (1, 3, "B")], 3)
    with pytest.raises(ValueError, match="outside"):
        spans_to_tags([(2, 4, "A")], 3)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_encode_decode_round_trip_on_random_spans(scheme):
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(0, 12)
        spans, pos = [], 0
        while pos < n:
            pos += rng.randint(0, 2)
            end = min(n, pos + rng.randint(1, 3))
            if pos < end:
                spans.append((pos, end, rng.choice(["A", "B"])))
            pos = end
        tags = spans_to_tags(spans, n, scheme)
        assert tags_to_spans(tags, scheme, strict=True) == spans
