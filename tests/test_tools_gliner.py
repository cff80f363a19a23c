"""The GLiNER tool on a GLiNER built from the session's tiny BERT: windows, offsets, spans, training."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openie.records import Entity, Record, write_jsonl
from openie.tools.gliner import (
    GLiNERTool,
    GLiNERToolError,
    GLiNERTrainConfig,
    evaluate_gliner,
    load_source,
    to_gliner_examples,
    train_gliner,
    word_spans,
)

WORDS = ("alice works for acme in paris and bob visited berlin with the red cross on monday , "
         "while grace hopper met dana lee in tokyo .").split()


def long_text(n_words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words))


@pytest.fixture(scope="module")
def tool(tiny_bert_path):
    return GLiNERTool.load(tiny_bert_path, max_width=4, max_len=64, max_words=24, overlap_words=6,
                           show_progress=False)


def test_builds_offline_from_a_local_encoder(tool, tiny_bert_path):
    assert tool.source.startswith("new:") and str(tiny_bert_path.resolve()) in tool.source
    assert tool.max_words == 24 and tool.model.config.max_width == 4


def test_windows_cover_the_text_and_own_disjoint_regions(tool):
    text = long_text(100)
    chunks = tool.chunks(text)
    assert len(chunks) > 3
    assert chunks[0].own_start == 0 and chunks[-1].own_end == len(text)
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.own_end == b.own_start and b.start < a.end  # owned regions tile; windows overlap
    assert all(len(word_spans(c.text)) <= 24 for c in chunks)


def test_a_script_without_spaces_is_cut_into_windows_the_encoder_reads_whole(tool):
    """A Chinese run is one gliner word: windows are bounded by the encoder's subwords too, with the
    label prompt, and every window is reported in the coverage (nothing past the limit unseen)."""
    text = "北京大学的研究人员今天在上海发布了一项关于人工智能的新报告。" * 40
    tool.predict([text], ["person", "city"], threshold=0.0)
    coverage = tool.last_coverage[0]
    extra = tool.prompt_subwords(["person", "city"])
    windows = tool.chunks(text, extra)
    assert len(windows) > 1 and coverage["chunks"] == len(windows) and coverage["chars_not_seen"] == 0
    assert all(tool.subwords(c.text) + extra <= tool.subword_limit() for c in windows)
    assert "".join(text[c.own_start:c.own_end] for c in windows) == text


def test_long_text_predictions_are_global_and_not_truncated(tool):
    text = long_text(150)
    found = tool.predict([text, "alice met bob ."], ["person", "city"], threshold=0.0)
    ents = found[0]
    assert ents, "a random model at threshold 0 keeps spans"
    for e in ents:
        assert text[e.start:e.end] == e.text and e.label in {"person", "city"}
    assert max(e.end for e in ents) > 0.8 * len(text)  # spans far past max_words words: no silent cut
    # flat decoding across windows: no two entities overlap
    spans = sorted((e.start, e.end) for e in ents)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
    assert all(found[1][i].end <= len("alice met bob .") for i in range(len(found[1])))


def test_window_predictions_equal_predicting_the_window_alone(tool):
    text = long_text(80)
    chunks = tool.chunks(text)
    c = chunks[1]
    whole = tool.predict([text], ["person"], threshold=0.0)[0]
    alone = tool.predict([c.text], ["person"], threshold=0.0)[0]
    owned_whole = [(e.start, e.end) for e in whole if c.own_start <= e.start < c.own_end]
    owned_alone = [(e.start + c.start, e.end + c.start) for e in alone if c.own_start <= e.start + c.start < c.own_end]
    assert set(owned_whole) <= set(owned_alone) and owned_whole
    for s, e in set(owned_alone) - set(owned_whole):  # dropped only for clashing with a neighbour's better span
        assert any(x.start < e and s < x.end for x in whole)


def test_labels_with_descriptions_are_labelled_by_name(tool):
    ents = tool.predict(["alice works for acme ."], {"person": "a named person", "organization": "a company"},
                        threshold=0.0)[0]
    assert ents and {e.label for e in ents} <= {"person", "organization"}
    with pytest.raises(GLiNERToolError, match="no labels"):
        tool.predict(["x"], [])


def test_propose_spans_are_type_agnostic(tool):
    spans = tool.propose_spans(["alice works for acme in paris ."], ["person", "place"], threshold=0.0)[0]
    assert spans and {e.label for e in spans} == {"entity"}
    assert len({e.span for e in spans}) == len(spans)


def test_encode_spans_routes_each_span_to_its_window(tool):
    text = long_text(80)
    chunks = tool.chunks(text)
    c = chunks[2]
    w = word_spans(c.text)
    local = [(w[10][0], w[11][1]), (w[10][0], w[10][1])]  # nested spans, owned by this window
    glob = [(s + c.start, e + c.start) for s, e in local]
    first = word_spans(text)[0]
    vecs = tool.encode_spans([text, "alice met bob"], [glob + [first], []])
    assert vecs[0].shape == (3, tool.model.config.hidden_size) and vecs[1].shape[0] == 0
    alone = tool.encode_spans([c.text], [local])[0]
    np.testing.assert_allclose(vecs[0][:2], alone, atol=1e-5)
    assert not np.allclose(vecs[0][0], vecs[0][1])
    with pytest.raises(GLiNERToolError, match="outside"):
        tool.encode_spans(["abc"], [[(0, 9)]])


def test_records_become_word_level_examples():
    r = Record("r1", "Alice moved to New York.", tokens=["Alice", "moved", "to", "New", "York", "."],
               entities=[Entity(0, 5, "person", "Alice"), Entity(15, 23, "location", "New York"),
                         Entity(1, 5, "person", "lice")])
    ex = to_gliner_examples([r], negatives=["person", "location", "organization"])[0]
    assert ex["tokenized_text"] == ["Alice", "moved", "to", "New", "York", "."]
    assert ex["ner"] == [[0, 0, "person"], [3, 4, "location"]]  # the inside-a-word entity is skipped
    assert ex["ner_negatives"] == ["organization"]


def _toy_file(path, n=24):
    people, places = ["alice", "bob", "grace"], ["paris", "berlin", "tokyo"]
    records = []
    for i in range(n):
        p, c = people[i % 3], places[(i // 3) % 3]
        text = f"{p} lives in {c} ."
        records.append(Record(f"t{i}", text, entities=[Entity(0, len(p), "person", p),
                                                       Entity(len(p) + 10, len(p) + 10 + len(c), "city", c)]))
    write_jsonl(records, path)
    return path


def test_train_checkpoints_resumes_and_writes_the_recipe(tiny_bert_path, tmp_path):
    data = _toy_file(tmp_path / "toy.jsonl")
    cfg = GLiNERTrainConfig(train=[str(data)], dev=[str(data)], init=str(tiny_bert_path), max_steps=4, save_steps=2,
                            batch_size=4, max_width=4, max_len=32)
    out = tmp_path / "run"
    first = train_gliner(cfg, out, show_progress=False)
    assert first["steps"] == 4 and first["sessions"] == 1
    recipe = json.loads((out / "model" / "openie_recipe.json").read_text())
    assert recipe["config"]["max_steps"] == 4 and set(recipe["dev"]) == {str(data)}
    assert 0.0 <= recipe["dev"][str(data)]["f1"] <= 1.0 and recipe["train_sentences"] == 24
    # a kill after step 2: the last checkpoint is gone, the run resumes from checkpoint-2
    import shutil

    shutil.rmtree(out / "checkpoint-4")
    second = train_gliner(cfg, out, show_progress=False)
    assert second["steps"] == 4 and second["sessions"] == 2
    reloaded = GLiNERTool.load(out / "model", show_progress=False)
    assert reloaded.fingerprint() == second["weights"]
    with pytest.raises(GLiNERToolError, match="another training config"):
        train_gliner(GLiNERTrainConfig(**{**cfg.__dict__, "max_steps": 6}), out, show_progress=False)


def test_config_errors_name_the_key():
    with pytest.raises(GLiNERToolError, match="unknown keys.*'stepz'"):
        GLiNERTrainConfig.from_dict({"train": ["conll2003:train"], "stepz": 3}, "x.yaml")
    with pytest.raises(GLiNERToolError, match="'train'"):
        GLiNERTrainConfig.from_dict({}, "x.yaml")
    with pytest.raises(GLiNERToolError, match="neither a registered corpus"):
        load_source("no_such_corpus:dev")


def test_evaluate_scores_a_corpus_on_its_own_types(tool, tmp_path):
    data = _toy_file(tmp_path / "toy.jsonl", n=6)
    res = evaluate_gliner(tool, [str(data)], threshold=0.0)
    assert set(res[str(data)]["per_type_f1"]) <= {"person", "city"} and res[str(data)]["records"] == 6


def test_prototypes_type_a_span_by_its_nearest_support_mean(tool):
    support = [Record("s1", "alice works for acme .", entities=[Entity(0, 5, "person", "alice"),
                                                              Entity(16, 20, "org", "acme")]),
               Record("s2", "bob works for siemens .", entities=[Entity(0, 3, "person", "bob"),
                                                               Entity(14, 21, "org", "siemens")])]
    protos = tool.prototypes(support)
    assert set(protos) == {"person", "org"}
    assert all(abs(np.linalg.norm(v) - 1) < 1e-5 for v in protos.values())
    # a support span is closer to its own type's mean than the other's on the support set itself
    typed = tool.nearest_prototype([r.text for r in support], [[e.span for e in r.entities] for r in support], protos)
    assert [t for row in typed for t, _ in row] == ["person", "org", "person", "org"]
    with pytest.raises(GLiNERToolError, match="no entities"):
        tool.prototypes([Record("e", "nothing here")])


def test_overlaps_across_windows_are_resolved_like_gliner_decoding():
    from openie.tools.gliner import _resolve_overlaps

    a = Entity(0, 10, "org", "x" * 10, 0.9)
    b = Entity(5, 15, "person", "x" * 10, 0.8)  # partial overlap with a
    c = Entity(2, 6, "person", "x" * 4, 0.7)  # nested in a
    d = Entity(0, 10, "person", "x" * 10, 0.6)  # same span as a, another type
    assert _resolve_overlaps([a, b, c, d], nested=False, multi_label=False) == [a]
    assert _resolve_overlaps([a, b, c, d], nested=True, multi_label=False) == [a, c]
    assert _resolve_overlaps([a, b, c, d], nested=True, multi_label=True) == [a, d, c]


@pytest.mark.slow
def test_packaged_minilm_builds_a_gliner_offline_that_reads_past_384_words():
    tool = GLiNERTool.load("minilm", show_progress=False)
    assert tool.model.config.max_len == 384 and tool.max_words == 256
    text = long_text(900)  # 900 words: gliner alone would stop at 384
    ents = tool.predict([text], ["person", "city"], threshold=0.0)[0]
    assert ents and max(e.end for e in ents) > 0.8 * len(text)
    assert all(text[e.start:e.end] == e.text for e in ents)
