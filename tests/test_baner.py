"""BANER: contrastive positions and loss, training with the term, constrained decoding, typing, LoRAHub, episodes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from openie.adapters.registry import AdapterRegistry
from openie.adapters.training import TrainingError, train_lora
from openie.engines.scripted import ScriptedEngine
from openie.methods.baner import (
    BANERExtractor,
    BoundaryContrastiveLoss,
    BoundaryError,
    BoundaryPositions,
    PrototypeTyper,
    boundary_contrastive_loss,
    boundary_positions,
    lorahub_merge,
    lorahub_search,
    sample_support,
    span_detection_pairs,
)
from openie.records import Entity, Record
from openie.schema import Schema


@pytest.fixture(scope="module")
def tok(tiny_decoder_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_decoder_path)


PROMPT = "Please extract the entity of person in the input sentence given below.\nInput: the doctor Grace Hopper met Bob ."


def test_positions_come_from_offsets_at_the_right_tokens(tok):
    enc = tok(PROMPT, return_offsets_mapping=True, add_special_tokens=False)
    offsets = enc["offset_mapping"]
    anchor = (PROMPT.index("person"), PROMPT.index("person") + 6)
    start = PROMPT.index("Grace")
    end = start + len("Grace Hopper")
    [pos] = boundary_positions(offsets, anchor, [(start, end)])

    def text(i):
        return PROMPT[offsets[i][0]:offsets[i][1]]

    assert "person".endswith(text(pos.anchor).strip())
    first, last = pos.positives[0], pos.positives[-1]
    assert text(first).strip() and PROMPT[offsets[first][0]:offsets[first][1]].strip() in "Grace"
    assert "Hopper".endswith(text(last).strip())
    assert pos.negatives == (first - 2, first - 1, last + 1, last + 2)
    assert offsets[first - 1][1] <= start and offsets[last + 1][0] >= end  # just outside the entity
    with pytest.raises(BoundaryError):
        boundary_positions(offsets, anchor, [(len(PROMPT) + 5, len(PROMPT) + 9)])


def test_negatives_never_leave_the_sequence(tok):
    text = "Bob ."
    offsets = tok(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    [pos] = boundary_positions(offsets, (0, 3), [(0, 3)])
    assert all(0 <= n < len(offsets) for n in pos.negatives) and pos.positives[0] not in pos.negatives


def test_loss_matches_the_formula_and_pulls_boundaries_to_the_anchor():
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    hidden = torch.randn(1, 6, 8, requires_grad=True)
    terms = [(0, BoundaryPositions(0, (2, 3), (1, 4)))]
    loss = boundary_contrastive_loss(hidden, terms)
    h = F.normalize(hidden[0], dim=-1)
    expected = -F.logsigmoid(h[2] @ h[0] + h[3] @ h[0] - h[1] @ h[0] - h[4] @ h[0])
    assert float(loss) == pytest.approx(float(expected), abs=1e-6)
    opt = torch.optim.SGD([hidden], lr=0.5)
    for _ in range(50):
        opt.zero_grad()
        boundary_contrastive_loss(hidden, terms).backward()
        opt.step()
    assert float(boundary_contrastive_loss(hidden, terms)) < float(loss)
    assert float(boundary_contrastive_loss(hidden, [])) == 0.0


SCHEMA = Schema.from_labels({"person": "a named person", "location": "a named place"})


def _record(rid, text, *ents):
    entities = []
    for span, label in ents:
        start = text.index(span)
        entities.append(Entity(start, start + len(span), label, span))
    return Record(id=rid, text=text, entities=entities)


RECORDS = [
    _record("r0", "Grace Hopper visited Paris in May .", ("Grace Hopper", "person"), ("Paris", "location")),
    _record("r1", "Bob lives near Rome .", ("Bob", "person"), ("Rome", "location")),
    _record("r2", "Nothing happened today .", ),
    _record("r3", "Alice met Carol in Oslo and Bergen .", ("Alice", "person"), ("Carol", "person"),
            ("Oslo", "location"), ("Bergen", "location")),
]


def test_pairs_put_the_anchor_on_the_type_name_and_positives_on_entity_edges(tok):
    pairs, spans = span_detection_pairs(RECORDS[:1], SCHEMA)
    assert len(pairs) == 2 and [p for p, _ in pairs][0].startswith("Please extract the entity of person")
    assert pairs[0][1] == " <<< Grace Hopper >>>" and pairs[1][1] == " <<< Paris >>>"
    loss = BoundaryContrastiveLoss(spans, layer=1)
    from openie.engines.tokenization import prompt_ids

    for i, (prompt, _) in enumerate(pairs):
        ids = prompt_ids(tok, prompt)
        [pos] = loss.prepare(i, prompt, ids, tok)
        offsets = tok(prompt, return_offsets_mapping=True)["offset_mapping"]
        shift = len(offsets) - len(ids)

        def text(j, offsets=offsets, shift=shift, prompt=prompt):
            s, e = offsets[j + shift]
            return prompt[s:e].strip()

        label, entity = ("person", "Grace Hopper") if i == 0 else ("location", "Paris")
        assert label.endswith(text(pos.anchor)) and text(pos.anchor)
        assert entity.startswith(text(pos.positives[0])) and entity.endswith(text(pos.positives[-1]))
        assert all(text(n) not in entity.split() for n in pos.negatives) and len(pos.negatives) == 4
    # a pair without entities of its type has no term
    pairs, spans = span_detection_pairs(RECORDS[2:3], SCHEMA)
    assert spans == [None, None] and BoundaryContrastiveLoss(spans, layer=1).prepare(0, pairs[0][0], [], tok) == []


def test_negative_ratio_caps_empty_answers_and_keeps_every_entity_pair():
    pairs, spans = span_detection_pairs(RECORDS, SCHEMA)
    assert sum(s is None for s in spans) == 2  # r2 has no entity of either type
    capped, capped_spans = span_detection_pairs(RECORDS * 3, SCHEMA, negative_ratio=0.1, seed=1)
    positives = [p for p, s in zip(*span_detection_pairs(RECORDS * 3, SCHEMA), strict=True) if s is not None]
    assert sum(s is None for s in capped_spans) == int(0.1 * len(positives))
    assert [p for p, s in zip(capped, capped_spans, strict=True) if s is not None] == positives
    assert capped == span_detection_pairs(RECORDS * 3, SCHEMA, negative_ratio=0.1, seed=1)[0]


def test_training_with_the_contrastive_term_logs_it_and_refuses_a_changed_term(tiny_decoder_path, tmp_path):
    pairs, spans = span_detection_pairs(RECORDS, SCHEMA)
    aux = BoundaryContrastiveLoss(spans, layer=1, weight=1.0)
    result = train_lora(str(tiny_decoder_path), pairs, tmp_path / "run", max_steps=12, lr=5e-3, batch_size=4,
                        device="cpu", progress=False, auxiliary_loss=aux, save_every=6)
    log = json.loads((tmp_path / "run" / "openie_training.json").read_text())
    assert log["config"]["auxiliary_loss"] == {"name": "boundary_contrastive", "layer": 1, "weight": 1.0,
                                               "negative_offsets": [-2, -1, 1, 2]}
    aux_losses = log["auxiliary_losses"]
    assert len(aux_losses) == 12 and all(a >= 0 for a in aux_losses)
    assert np.mean(aux_losses[-4:]) < np.mean(aux_losses[:4])  # weight 1: the term is being minimised
    assert result.steps == 12
    with pytest.raises(TrainingError, match="auxiliary_loss"):
        train_lora(str(tiny_decoder_path), pairs, tmp_path / "run", max_steps=14, batch_size=4, lr=5e-3,
                   device="cpu", progress=False, auxiliary_loss=BoundaryContrastiveLoss(spans, layer=2, weight=1.0))


@pytest.mark.parametrize("beams", [1, 3])
def test_constrained_decoding_never_emits_a_token_outside_the_input(tiny_decoder_path, tok, beams):
    from openie.engines.base import GenerationRequest
    from openie.engines.hf import TransformersEngine
    from openie.engines.tokenization import allowed_token_ids

    engine = TransformersEngine(str(tiny_decoder_path), device="cpu", num_beams=beams)
    produced = []  # a spy on the real model: the token ids each call generated, per input row
    real = engine.model.generate

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        produced.append(out[:, kwargs["input_ids"].shape[1]:].tolist())
        return out

    engine.model.generate = spy
    texts = ["Grace Hopper met Bob in Paris .", "the river flows"]
    requests = [GenerationRequest(prompt=f"Sentence: {t}\nEntities:", max_tokens=12, allowed_texts=(t, "<<< >>>"))
                for t in texts]
    outs = engine.generate(requests)
    constrained = [row for call in produced for row in call]
    produced.clear()
    engine.generate([GenerationRequest(prompt=r.prompt, max_tokens=12) for r in requests])
    free = [row for call in produced for row in call]
    # rows are sorted longest prompt first inside a batch: compare each row with its own input's set
    sets = [set(allowed_token_ids(tok, (t, "<<< >>>"), engine.eos_ids)) | {engine.pad_id} for t in texts]
    assert all(out.completion_tokens > 0 for out in outs)
    assert all(any(set(row) <= s for s in sets) for row in constrained)
    assert all(set(row) <= sets[0] | sets[1] for row in constrained)
    assert any(not set(row) <= sets[0] | sets[1] for row in free)  # the random tiny model leaves the input when free
    assert (engine.model_id.endswith("#beams=3")) == (beams == 3)


def test_extractor_sends_constrained_per_type_requests_and_keeps_only_verbatim_spans():
    def answer(request):
        if "entity of person" in request.prompt:
            return " <<< Grace Hopper >>> <<< Grace Hoper >>>"
        return " <<< Paris >>>" if "Paris" in request.prompt else ""

    engine = ScriptedEngine(answer)
    extractor = BANERExtractor(engine, SCHEMA, adapter="det")
    [pred, empty] = extractor.extract([RECORDS[0], RECORDS[2]], progress=False)
    assert len(engine.calls) == 4 and all(c.adapter == "det" for c in engine.calls)
    assert engine.calls[0].allowed_texts == (RECORDS[0].text, "<<< >>>")
    assert [(e.text, e.label) for e in pred.entities] == [("Grace Hopper", "person"), ("Paris", "location")]
    assert any(p["kind"] == "not_found" for p in pred.meta["parse_problems"])  # the misspelt span is dropped
    assert empty.entities == []
    unconstrained = BANERExtractor(ScriptedEngine(answer), SCHEMA, constrained=False)
    unconstrained.extract([RECORDS[0]], progress=False)
    assert unconstrained.engine.calls[0].allowed_texts is None


class WordVectors:
    """Span vectors from a fixed table of words: a deterministic stand-in for an encoder."""

    TABLE = {"Grace": [1, 0.1], "Hopper": [1, 0], "Bob": [0.9, 0.2], "Alice": [1, 0.2], "Carol": [0.8, 0.1],
             "Paris": [0, 1], "Rome": [0.1, 1], "Oslo": [0.2, 0.9], "Bergen": [0, 0.8]}

    def encode_spans(self, texts, spans):
        return [np.array([np.mean([self.TABLE[w] for w in t[s:e].split()], axis=0) for s, e in sp]).reshape(-1, 2)
                for t, sp in zip(texts, spans, strict=True)]


def test_prototypes_type_each_span_by_the_nearest_support_mean():
    typer = PrototypeTyper.fit(WordVectors(), RECORDS[:2])
    text = RECORDS[3].text
    spans = [(e.start, e.end) for e in RECORDS[3].entities]
    got = typer.assign([text], [spans])[0]
    assert [label for label, _ in got] == [e.label for e in RECORDS[3].entities]
    engine = ScriptedEngine(lambda r: " <<< Alice >>> <<< Oslo >>>" if "person" in r.prompt else "")
    [pred] = BANERExtractor(engine, SCHEMA, typer=typer).extract([RECORDS[3]], progress=False)
    assert {(e.text, e.label) for e in pred.entities} == {("Alice", "person"), ("Oslo", "location")}
    with pytest.raises(BoundaryError):
        PrototypeTyper.fit(WordVectors(), RECORDS[2:3])


def test_gliner_span_vectors_serve_as_prototypes(tiny_gliner_path):
    from openie.methods.baner import load_span_encoder

    typer = PrototypeTyper.fit(load_span_encoder(str(tiny_gliner_path)), RECORDS[:2])
    assert typer.labels == ["location", "person"] and typer.matrix.shape[0] == 2
    [got] = typer.assign([RECORDS[3].text], [[(e.start, e.end) for e in RECORDS[3].entities]])
    assert len(got) == 4 and all(label in typer.labels and -1.0 <= sim <= 1.0001 for label, sim in got)


def test_from_options_fits_prototypes_from_a_support_file(tiny_gliner_path, tmp_path):
    from openie.records import write_jsonl

    support = tmp_path / "support.jsonl"
    write_jsonl(RECORDS, support)
    engine = ScriptedEngine(lambda r: " <<< Alice >>> <<< Oslo >>>" if "person" in r.prompt else "")
    extractor = BANERExtractor.from_options(engine, SCHEMA, {"support": str(support), "k": 1,
                                                             "typing_encoder": str(tiny_gliner_path)})
    assert extractor.typer is not None and sorted(extractor.typer.labels) == ["location", "person"]
    assert extractor.describe()["typing"] == "prototype"
    [pred] = extractor.extract([RECORDS[3]], progress=False)
    assert {e.text for e in pred.entities} == {"Alice", "Oslo"} and all(e.label in SCHEMA.entity_labels
                                                                        for e in pred.entities)


def test_support_from_the_runs_pool_fits_prototypes_from_it(tiny_gliner_path, tmp_path):
    """``support: pool`` takes the run's pool (each dataset's own train split in a grid); no pool: refused."""
    from openie.methods.baner.method import REGISTRATION, BANEROptions
    from openie.methods.registry import MethodContext
    from openie.records import write_jsonl

    pool = tmp_path / "pool.jsonl"
    write_jsonl(RECORDS, pool)
    engine = ScriptedEngine(lambda r: " <<< Alice >>>" if "person" in r.prompt else "")
    options = BANEROptions(support="pool", k=1, typing_encoder=str(tiny_gliner_path))
    extractor = REGISTRATION.build(MethodContext(SCHEMA, engine, "ner.baner.v1", default_pool=str(pool)), options)
    assert extractor.typer is not None and sorted(extractor.typer.labels) == ["location", "person"]
    with pytest.raises(BoundaryError, match="support: 'pool'.*has none"):
        REGISTRATION.build(MethodContext(SCHEMA, engine, "ner.baner.v1"), options)


def test_support_sampling_reaches_k_per_type_and_is_seeded():
    pool = RECORDS * 3
    support = sample_support(pool, ["person", "location"], 3, seed=1)
    counts = {lab: sum(e.label == lab for r in support for e in r.entities) for lab in ("person", "location")}
    assert min(counts.values()) >= 3 and all(r.entities for r in support)
    assert [r.id for r in support] == [r.id for r in sample_support(pool, ["person", "location"], 3, seed=1)]


@pytest.fixture(scope="module")
def two_adapters(tiny_decoder_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    person = [(p, t) for p, t in span_detection_pairs(RECORDS, SCHEMA)[0] if "person" in p]
    location = [(p, t) for p, t in span_detection_pairs(RECORDS, SCHEMA)[0] if "location" in p]
    paths = []
    for name, pairs in (("a", person), ("b", location)):
        train_lora(str(tiny_decoder_path), pairs, root / name, max_steps=15, lr=1e-2, batch_size=2, device="cpu",
                   progress=False, seed=3)
        paths.append(root / name)
    return paths, person, location


def test_lorahub_pairs_keep_entity_answers_first():
    from openie.methods.baner import lorahub_pairs

    pairs, _ = span_detection_pairs(RECORDS, SCHEMA)
    got = lorahub_pairs(pairs, 5, seed=0)
    assert len(got) == 5 and all(t.strip() for _, t in got) and set(got) <= set(pairs)
    assert lorahub_pairs(pairs, None) == pairs and len(lorahub_pairs(pairs, 7)) == 7


def test_lorahub_weights_change_the_merged_adapter(two_adapters):
    from safetensors.torch import load_file

    paths, _, _ = two_adapters
    a, b = (load_file(str(p / "adapter_model.safetensors")) for p in paths)
    merged = lorahub_merge(paths, [0.25, 0.75])
    key = next(iter(a))
    assert np.allclose(merged[key].numpy(), 0.25 * a[key].numpy() + 0.75 * b[key].numpy(), atol=1e-6)
    assert not np.allclose(lorahub_merge(paths, [1.0, 0.0])[key].numpy(), merged[key].numpy())
    with pytest.raises(BoundaryError):
        lorahub_merge(paths, [1.0])


def test_lorahub_search_fits_the_support_and_registers_the_merge(tiny_decoder_path, two_adapters, tmp_path):
    from peft import PeftModel

    from openie.adapters.training import pairs_loss
    from openie.models import load_causal_lm, load_tokenizer

    paths, person, _ = two_adapters
    registry = AdapterRegistry(tmp_path / "registry")
    result = lorahub_search(str(tiny_decoder_path), paths, person, tmp_path / "hub", budget=12, l1=0.0,
                            registry=registry, name="hub", progress=False)
    assert result.loss <= result.uniform_loss and len(result.history) <= 12
    assert result.weights[0] > result.weights[1]  # the person adapter fits person prompts better
    assert registry.get("hub").training["lorahub"]["weights"] == result.weights
    tokenizer = load_tokenizer(str(tiny_decoder_path))
    model = PeftModel.from_pretrained(load_causal_lm(str(tiny_decoder_path)), str(tmp_path / "hub")).eval()
    assert pairs_loss(model, tokenizer, person) == pytest.approx(result.loss, rel=1e-4)  # the saved merge is the found one
