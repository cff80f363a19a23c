"""NER Retriever on the session's tiny decoder: the hook, the triplet loss, the index and R-precision."""

from __future__ import annotations

import numpy as np
import pytest

from openie.records import Entity, Record
from openie.tools.ner_retriever import (
    GoldMentions,
    HookPoint,
    MentionEncoder,
    MentionIndex,
    MentionProjector,
    NERRetriever,
    NERRetrieverError,
    ProjectorConfig,
    TripletData,
    build_projector,
    collect_triplet_data,
    evaluate_type_retrieval,
    scaled_width,
    train_projector,
    triplet_loss,
    type_relevance,
)


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_decoder_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_decoder_path).eval(), AutoTokenizer.from_pretrained(tiny_decoder_path)


def encoder(model_and_tokenizer, hooks, **kw) -> MentionEncoder:
    model, tok = model_and_tokenizer
    return MentionEncoder(model, tok, hooks, show_progress=False, **kw)


TEXTS = ["Alice Johnson works for Siemens in Berlin.", "Bob met Grace Hopper in Tokyo on Monday."]
SPANS = [[(0, 13), (24, 31), (35, 41)], [(0, 3), (8, 20)]]


def test_hook_reads_the_chosen_submodule_at_the_mentions_last_token(model_and_tokenizer):
    import torch

    model, tok = model_and_tokenizer
    enc = encoder(model_and_tokenizer, [HookPoint(0), HookPoint(1), HookPoint(0, "")])
    v0, v1, block0 = enc.encode(TEXTS, SPANS)
    kv_width = model.config.num_key_value_heads * (model.config.hidden_size // model.config.num_attention_heads)
    assert [a.shape for a in v0] == [(3, kv_width), (2, kv_width)]
    assert block0[0].shape == (3, model.config.hidden_size)
    assert not np.allclose(v0[0], v1[0])  # another layer, another vector
    # by hand: v_proj of layer l = v_proj(input_layernorm(hidden_states[l])) at "Johnson"'s last token
    ids = tok(TEXTS[0], return_offsets_mapping=True)
    last = max(i for i, (s, e) in enumerate(ids["offset_mapping"]) if s < 13 and e > s)
    with torch.inference_mode():
        out = model(torch.tensor([ids["input_ids"]]), output_hidden_states=True)
        layer = model.model.layers[1]
        expected = layer.self_attn.v_proj(layer.input_layernorm(out.hidden_states[1]))[0, last].numpy()
    np.testing.assert_allclose(v1[0][0], expected, atol=1e-5)
    np.testing.assert_allclose(block0[0][0], out.hidden_states[1][0, last].numpy(), atol=1e-5)


def test_a_mention_vector_only_depends_on_the_text_up_to_it(model_and_tokenizer):
    enc = encoder(model_and_tokenizer, HookPoint(1), batch_size=1)
    (whole,) = enc.encode(TEXTS[:1], SPANS[:1])
    (cut,) = enc.encode([TEXTS[0][:31]], [[(24, 31)]])
    np.testing.assert_allclose(whole[0][1], cut[0][0], atol=1e-5)


def test_long_texts_are_read_in_windows(model_and_tokenizer):
    model, tok = model_and_tokenizer
    enc = encoder(model_and_tokenizer, HookPoint(1), max_length=24)
    text = " ".join(["Alice Johnson works for Siemens in Berlin."] * 12)
    spans = [(m, m + 13) for m in range(0, len(text), 43)]
    windows = enc._windows(0, text, spans)
    assert len(windows) > 1 and sorted(slot for w in windows for slot, _, _ in w[3]) == list(range(len(spans)))
    assert all(len(tok(w[1])["input_ids"]) <= 24 for w in windows)
    (vecs,) = enc.encode([text], [spans])
    assert vecs[0].shape == (len(spans), 64)
    _, window, shift, slots = windows[-1]
    slot, s, e = slots[-1]
    (alone,) = enc.encode([window], [[(s - shift, e - shift)]])
    np.testing.assert_allclose(vecs[0][slot], alone[0][0], atol=1e-5)


def test_bad_hook_points_are_named(model_and_tokenizer):
    with pytest.raises(NERRetrieverError, match="layer 5 does not exist: the model has 2"):
        encoder(model_and_tokenizer, HookPoint(5))
    with pytest.raises(NERRetrieverError, match="no sub-module 'self_attn.w_proj'.*v_proj"):
        encoder(model_and_tokenizer, HookPoint(0, "self_attn.w_proj"))
    enc = encoder(model_and_tokenizer, HookPoint(-1))
    assert enc.dims == [64]


def _clusters(n_types=4, per_type=40, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_types, dim)) * 2
    shared = rng.normal(size=dim) * 6  # a common offset that makes raw cosine uninformative
    mentions, types = [], []
    for t in range(n_types):
        mentions.append(centres[t] + shared + rng.normal(size=(per_type, dim)))
        types += [f"t{t}"] * per_type
    anchors = {f"t{t}": (centres[t] + shared * 0.5 + rng.normal(size=dim) * 0.3).astype(np.float32)
               for t in range(n_types)}
    return TripletData(np.concatenate(mentions).astype(np.float32), types, anchors)


def test_triplet_loss_decreases_on_a_toy_set(tmp_path):
    data = _clusters()
    cfg = ProjectorConfig(hidden_dim=32, output_dim=16, steps=150, batch_size=32, learning_rate=3e-3,
                          checkpoint_every=50)
    mlp, losses = train_projector(data, cfg, tmp_path / "p", show_progress=False)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    # resume: a finished run loads its checkpoint and trains no further
    mlp2, losses2 = train_projector(data, cfg, tmp_path / "p", show_progress=False)
    assert losses2 == losses
    import torch

    for a, b in zip(mlp.state_dict().values(), mlp2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(NERRetrieverError, match="another config"):
        train_projector(data, ProjectorConfig(**{**cfg.__dict__, "margin": 0.5}), tmp_path / "p", show_progress=False)


def test_triplet_loss_is_zero_when_positives_beat_negatives_by_the_margin():
    import torch

    a = torch.tensor([[1.0, 0.0]])
    assert float(triplet_loss(a, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.3)) == 0.0
    assert float(triplet_loss(a, torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]), 0.3)) == pytest.approx(1.3)


def test_projector_shape_and_save_load(tmp_path):
    mlp = build_projector(1024)
    assert [m.__class__.__name__ for m in mlp] == ["Linear", "SiLU", "Dropout", "Linear"]
    assert mlp[0].out_features == 500 == mlp[3].out_features and scaled_width(256) == 125
    p = MentionProjector(build_projector(16, 8, 4).eval(),
                         {"config": {"hidden_dim": 8, "output_dim": 4, "dropout": 0.1}, "input_dim": 16})
    x = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    np.testing.assert_allclose(MentionProjector.load(p.save(tmp_path / "proj"))(x), p(x), atol=1e-6)
    np.testing.assert_array_equal(MentionProjector.load(MentionProjector().save(tmp_path / "id"))(x), x)  # identity


def test_index_save_load_gives_identical_results(tmp_path):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(30, 8)).astype(np.float32)
    idx = MentionIndex.build([(f"d{i // 3}", (i, i + 1), v) for i, v in enumerate(vecs)], meta={"hook": "x"})
    q = rng.normal(size=8)
    before = idx.search_vector(q, 4)
    loaded = MentionIndex.load(idx.save(tmp_path / "ix"))
    after = loaded.search_vector(q, 4)
    assert [(h.doc_id, h.mention) for h in before] == [(h.doc_id, h.mention) for h in after]
    np.testing.assert_allclose([h.score for h in before], [h.score for h in after], atol=1e-6)
    assert len({h.doc_id for h in before}) == 4 and loaded.meta == {"hook": "x"}
    with pytest.raises(NERRetrieverError, match="no mention index"):
        MentionIndex.load(tmp_path / "nothing")


def test_documents_are_deduplicated_by_best_mention():
    idx = MentionIndex.build([("a", (0, 1), np.array([1.0, 0.0])), ("a", (2, 3), np.array([0.9, 0.1])),
                              ("b", (0, 1), np.array([0.8, 0.2])), ("c", (0, 1), np.array([0.0, 1.0]))])
    hits = idx.search_vector(np.array([1.0, 0.0]), 2)
    assert [h.doc_id for h in hits] == ["a", "b"] and hits[0].mention == (0, 1)


def test_r_precision_on_a_hand_made_case():
    relevant = {"person": {"d1", "d2", "d3"}, "city": {"d4"}, "unused": set()}
    rankings = {"who": ["d1", "d9", "d2"], "where": ["d4"]}
    res = evaluate_type_retrieval(lambda desc, k: rankings[desc][:k], {"person": "who", "city": "where",
                                                                      "unused": "none"}, relevant)
    assert res["per_type"] == {"person": pytest.approx(2 / 3, abs=1e-4), "city": 1.0}
    assert res["macro_r_precision"] == pytest.approx((2 / 3 + 1) / 2, abs=1e-4) and res["types"] == 2


def test_retriever_indexes_gold_mentions_and_answers_a_description(model_and_tokenizer, tmp_path):
    records = [Record("r1", TEXTS[0], entities=[Entity(0, 13, "person", "Alice Johnson"),
                                                Entity(35, 41, "city", "Berlin")]),
               Record("r2", TEXTS[1], entities=[Entity(0, 3, "person", "Bob"), Entity(32, 37, "city", "Tokyo")])]
    enc = encoder(model_and_tokenizer, HookPoint(1))
    anchors = dict(zip(["person", "city"], enc.encode_texts(["a person", "a city"])[0], strict=True))
    vectors = enc.encode([r.text for r in records], GoldMentions().detect(records))[0]
    data = collect_triplet_data(records, vectors, anchors)
    assert data.mentions.shape == (4, 64) and sorted(data.types) == ["city", "city", "person", "person"]
    mlp, _ = train_projector(data, ProjectorConfig(hidden_dim=16, steps=5, batch_size=4), show_progress=False)
    ret = NERRetriever(enc, MentionProjector(mlp), show_progress=False)
    index = ret.index_records(records, GoldMentions())
    assert len(index) == 4 and index.documents == {"r1", "r2"}
    hits = ret.search("a city", k=2)
    assert {h.doc_id for h in hits} == {"r1", "r2"} and hits[0].score >= hits[1].score
    assert type_relevance(records) == {"person": {"r1", "r2"}, "city": {"r1", "r2"}}


def test_a_saved_retriever_answers_the_same(model_and_tokenizer, tmp_path):
    records = [Record(f"r{i}", t, entities=[Entity(s, e, "x", t[s:e]) for s, e in sp])
               for i, (t, sp) in enumerate(zip(TEXTS, SPANS, strict=True))]
    enc = encoder(model_and_tokenizer, HookPoint(1))
    ret = NERRetriever(enc, MentionProjector(build_projector(64, 16).eval(), {
        "config": {"hidden_dim": 16, "output_dim": None, "dropout": 0.1}, "input_dim": 64}), show_progress=False)
    ret.index_records(records, GoldMentions())
    loaded = NERRetriever.load(ret.save(tmp_path / "ret"), encoder=enc, show_progress=False)
    assert [(h.doc_id, h.mention) for h in loaded.search("a city", 2)] == \
           [(h.doc_id, h.mention) for h in ret.search("a city", 2)]
    with pytest.raises(NERRetrieverError, match="not a saved NER Retriever"):
        NERRetriever.load(tmp_path)


def test_llm_mentions_are_grounded_and_unfound_lines_dropped():
    from openie.engines.scripted import ScriptedEngine
    from openie.tools.ner_retriever import LLMMentions

    engine = ScriptedEngine(["- Alice Johnson\n2. Berlin\nAtlantis\n", "Bob\nBob\n"])
    found = LLMMentions(engine).detect([Record("a", TEXTS[0]), Record("b", "Bob met Bob.")])
    assert found == [[(0, 13), (35, 41)], [(0, 3), (8, 11)]]  # a repeated name takes the next occurrence
    assert "Text: Alice Johnson works" in engine.calls[0].prompt


@pytest.mark.slow
def test_packaged_gemma_value_projection_at_the_middle_layer():
    enc = MentionEncoder.load("gemma-3-270m", show_progress=False)
    assert enc.hooks == [HookPoint(9, "self_attn.v_proj")] and enc.dims == [256]  # 18 layers, 1 kv head x 256
    (whole,) = enc.encode(TEXTS[:1], SPANS[:1])
    (cut,) = enc.encode([TEXTS[0][:31]], [[(24, 31)]])
    np.testing.assert_allclose(whole[0][1], cut[0][0], atol=1e-4)
