"""RetrieveAll: data splits, the dynamic threshold, same-language augmentation, routing modes, a mixed
vLLM batch, and the experiment runner end to end on a tiny model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from openie.engines.scripted import ScriptedEngine
from openie.methods.retrieveall import (
    CANONICAL_LABELS,
    AugmentationConfig,
    MemoRepresentation,
    NgramRepresentation,
    RetrieveAllError,
    RetrieveAllExtractor,
    SimilarExamples,
    above_threshold,
    augmented_training_pairs,
    build_router,
    canonical_records,
    dynamic_threshold,
    heldout_split,
    language_data,
    prompt_schema,
    seeded_sample,
)
from openie.records import Entity, Record
from prompts.builder import PromptBuilder

EMPTY = '{"entities": []}'


def rec(rid: str, text: str, lang: str, *mentions: tuple[str, str]) -> Record:
    ents = [Entity(text.index(m), text.index(m) + len(m), label, m) for m, label in mentions]
    return Record(rid, text, lang=lang, entities=ents)


# A toy multilingual pool: English, German and Russian sentences about the same kinds of things.
POOL = [
    rec("en-0", "Anna visited Paris in May .", "en", ("Anna", "person"), ("Paris", "location")),
    rec("en-1", "Boris joined Siemens in 1990 .", "en", ("Boris", "person"), ("Siemens", "organization")),
    rec("en-2", "The weather was cold in January .", "en"),
    rec("en-3", "Carla visited Lima in June .", "en", ("Carla", "person"), ("Lima", "location")),
    rec("en-4", "The committee met on Monday to discuss the budget .", "en"),
    rec("de-0", "Anna visited Paris im Mai .", "de", ("Anna", "person"), ("Paris", "location")),
    rec("de-1", "Boris trat 1990 bei Siemens ein .", "de", ("Boris", "person"), ("Siemens", "organization")),
    rec("de-2", "Das Wetter war im Januar kalt .", "de"),
    rec("de-3", "Carla besuchte im Juni die Stadt Lima .", "de", ("Carla", "person"), ("Lima", "location")),
    rec("de-4", "Der Ausschuss tagte am Montag über den Haushalt .", "de"),
    rec("ru-0", "Анна посетила Париж в мае .", "ru", ("Анна", "person"), ("Париж", "location")),
    rec("ru-1", "Борис пришёл в Сименс в 1990 году .", "ru", ("Борис", "person"), ("Сименс", "organization")),
    rec("ru-2", "Погода в январе была холодной .", "ru"),
    rec("ru-3", "Карла посетила Лиму в июне .", "ru", ("Карла", "person"), ("Лиму", "location")),
    rec("ru-4", "Комитет собрался в понедельник обсудить бюджет .", "ru"),
]
ADAPTERS = {"en": "ra-en", "de": "ra-de", "ru": "ra-ru"}
QUERIES = [
    Record("q-en", "Dmitri visited Oslo in the cold January weather .", lang="en"),
    Record("q-de", "Der Ausschuss besuchte im Januar die Stadt Oslo .", lang="de"),
    Record("q-ru", "Погода в Осло в январе была холодной .", lang="ru"),
]


def builder() -> PromptBuilder:
    return PromptBuilder("ner.json.v1", prompt_schema())


@pytest.fixture(scope="module")
def examples() -> SimilarExamples:
    return SimilarExamples(POOL, NgramRepresentation())


class CountingEngine(ScriptedEngine):
    """The scripted engine, counting ``generate`` calls (one per batch is the contract)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[list] = []

    def generate(self, requests):
        self.batches.append(list(requests))
        return super().generate(requests)


# ------------------------------------------------------------------------------------ data


def test_heldout_split_is_seeded_disjoint_and_complete():
    records = [Record(f"r{i}", f"sentence {i}") for i in range(101)]
    train, dev = heldout_split(records, 0.5, "0:split:de")
    assert len(dev) == 50 and len(train) == 51
    assert {r.id for r in train}.isdisjoint({r.id for r in dev})
    assert {r.id for r in train} | {r.id for r in dev} == {r.id for r in records}
    assert [r.id for r in train] == [r.id for r in records if r in train]  # corpus order kept
    again = heldout_split(records, 0.5, "0:split:de")
    assert [r.id for r in again[1]] == [r.id for r in dev]
    assert [r.id for r in heldout_split(records, 0.5, "1:split:de")[1]] != [r.id for r in dev]
    assert len(heldout_split(records, 0.2, 0)[1]) == 20
    with pytest.raises(RetrieveAllError, match="heldout_fraction"):
        heldout_split(records, 1.0, 0)
    sample = seeded_sample(records, 10, "s")
    assert sample == seeded_sample(records, 10, "s") and len(sample) == 10
    assert [r.id for r in sample] == sorted((r.id for r in sample), key=lambda x: int(x[1:]))
    assert seeded_sample(records, None, "s") == records


def test_canonical_records_keep_the_four_labels_and_count_the_rest():
    raw = [Record("a", "Ada met Bob on Monday in Rome .", lang="xx",
                  entities=[Entity(0, 3, "person", "Ada"), Entity(15, 21, "date", "Monday"),
                            Entity(25, 29, "location", "Rome")])]
    out, dropped = canonical_records(raw, "en", "toy")
    assert [e.label for e in out[0].entities] == ["person", "location"]
    assert dropped == {"date": 1} and out[0].lang == "en" and out[0].meta["corpus"] == "toy"
    assert [e.label for e in raw[0].entities] == ["person", "date", "location"]  # the input is not changed


def test_language_data_on_the_shared_corpora(shared_data):
    data = language_data(["en", "de"], n_train=20, n_dev=10, seed=0)
    en, de = data["en"], data["de"]
    assert en.train_source == "conll2003:train" and en.dev_source == "conll2003:dev"
    assert "50% held out" in de.dev_source and len(de.train) == 20 and len(de.dev) == 10
    for d in (en, de):
        assert {r.id for r in d.train}.isdisjoint({r.id for r in d.dev})
        assert all(r.lang == d.lang for r in d.train + d.dev)
        assert {e.label for r in d.train + d.dev for e in r.entities} <= set(CANONICAL_LABELS)
    assert [r.id for r in language_data(["de"], n_train=20, n_dev=10, seed=0)["de"].dev] == [r.id for r in de.dev]
    # the split does not depend on the caps: more training sentences never move dev sentences
    full = language_data(["de"], seed=0)["de"]
    assert len(full.train) + len(full.dev) == 2200 and len(full.dev) == 1100
    assert {r.id for r in full.train}.isdisjoint({r.id for r in full.dev})
    assert {r.id for r in de.dev} <= {r.id for r in full.dev} and {r.id for r in de.train} <= {r.id for r in full.train}
    other = language_data(["de"], n_train=20, n_dev=10, seed=1)["de"]
    assert {r.id for r in other.dev} != {r.id for r in de.dev}
    # GermEval's *deriv / *part tags arrive as misc
    assert {e.label for r in full.train for e in r.entities} == set(CANONICAL_LABELS)


# ------------------------------------------------------------------------------------ threshold and augmentation


def test_dynamic_threshold_keeps_exactly_the_standouts():
    scores = [0.9, 0.1, 0.1, 0.1]
    kept, threshold = above_threshold(scores, 1.0)
    assert kept == [0] and threshold == pytest.approx(0.3 + np.std(scores))
    assert above_threshold([0.5, 0.5, 0.4], 1.0)[0] == []  # nothing stands out: nothing kept
    assert above_threshold([0.8, 0.2], 1.0)[0] == []  # two candidates: the best sits exactly at mean + 1 std
    assert above_threshold([0.5, 0.5, 0.4], 0.0, top=3)[0] == [0, 1]  # n_std 0: above the mean
    assert above_threshold([0.9, 0.85, 0.1, 0.1, 0.1, 0.1], 1.0, top=2)[0] == [0, 1]
    assert above_threshold([0.9, 0.85, 0.1, 0.1, 0.1, 0.1], 1.0, top=2, exclude={0})[0] == [1]
    assert above_threshold([0.9, 0.1, 0.1, 0.1], 2.0)[0] == []  # 0.9 < 0.3 + 2 * 0.346
    assert dynamic_threshold([]) == float("inf")


class HandMadeRepresentation(MemoRepresentation):
    """Vectors given by hand: a text's sentence vector and each mention's vector by its text."""

    def __init__(self, sentences: dict[str, np.ndarray], mentions: dict[str, np.ndarray]):
        super().__init__()
        self.sentences, self.mentions = sentences, mentions

    def config(self):
        return {"kind": "hand-made"}

    def _encode(self, texts, spans):
        return (np.stack([self.sentences[t] for t in texts]),
                [np.stack([self.mentions[t[s:e]] for s, e in sp]) if sp else np.zeros((0, 2)) for t, sp in
                 zip(texts, spans, strict=True)])


def _at(cos: float) -> np.ndarray:
    return np.array([cos, np.sqrt(max(0.0, 1 - cos * cos))])


def test_selection_on_hand_made_similarities():
    # Query "Q q .": sentence cosines to c1..c6 are .9 .1 .1 .1 .1 .1, threshold .233 + .298: c1 is the
    # context example. Best mention cosines are .95 .9 0 0 0 0, threshold .308 + .430: c1 is best but
    # already shown, so the entity example is c2 (.9 > .738).
    context = [0.9, 0.1, 0.1, 0.1, 0.1, 0.1]
    mention = [0.95, 0.9, 0.0, 0.0, 0.0, 0.0]
    pool = [rec(f"c{i + 1}", f"M{i + 1} c{i + 1} .", "xx", (f"M{i + 1}", "person")) for i in range(6)]
    query = rec("q", "Q q .", "xx", ("Q", "person"))
    rep = HandMadeRepresentation({**{r.text: _at(c) for r, c in zip(pool, context, strict=True)}, query.text: _at(1.0)},
                                 {**{f"M{i + 1}": _at(m) for i, m in enumerate(mention)}, "Q": _at(1.0)})
    ex = SimilarExamples([*pool, query], rep)
    selections = ex.training_selections("xx")
    sel = selections[-1]
    assert sel.query_id == "q"
    assert [(p.record_id, p.level) for p in sel.picks] == [("c1", "context"), ("c2", "entity")]
    assert sel.context_threshold == pytest.approx(dynamic_threshold(context), abs=1e-6)
    assert sel.entity_threshold == pytest.approx(dynamic_threshold(mention), abs=1e-6)
    assert sel.picks[0].score == pytest.approx(0.9, abs=1e-6) and sel.picks[1].score == pytest.approx(0.9, abs=1e-6)
    assert [r.id for r in ex.demonstrations_of(sel)] == ["c1", "c2"]
    assert all(p.record_id != s.query_id for s in selections for p in s.picks)
    # stricter (2 std): the context example alone (.9 > .233 + .596), c2 no longer (.9 < .308 + .860)
    strict = SimilarExamples([*pool, query], rep, AugmentationConfig(n_std=2.0))
    assert [p.record_id for p in strict.training_selections("xx")[-1].picks] == ["c1"]
    one = SimilarExamples([*pool, query], rep, AugmentationConfig(max_demonstrations=1))
    assert [p.level for p in one.training_selections("xx")[-1].picks] == ["context"]
    no_context = SimilarExamples([*pool, query], rep, AugmentationConfig(context=False))
    assert [(p.record_id, p.level) for p in no_context.training_selections("xx")[-1].picks] == [("c1", "entity")]


def test_augmentation_picks_same_language_examples_only(examples):
    en = examples.training_selections("en")
    assert en[0].query_id == "en-0"
    assert all(p.record_id.startswith("en-") for s in en for p in s.picks)
    assert en[0].picks and en[0].picks[0].record_id == "en-3"  # "Carla visited Lima in June ."
    # the German near-copy is what the union pool would pick: the language restriction is what keeps it out
    union = examples.select("en-0", POOL[0].text, examples.all.sentences[0], examples.all.mentions[:2], None)
    assert union.picks[0].record_id == "de-0"
    got = augmented_training_pairs(examples, builder(), "en")
    assert len(got.pairs) == 5 and got.stats.prompts == 5
    assert sum(got.stats.by_demonstrations.values()) == 5 and got.stats.without_mentions == 2
    for prompt, _ in got.pairs:
        assert not any(r.text in prompt for r in POOL if r.lang != "en")
    first_prompt, first_target = got.pairs[0]
    assert "Text: Carla visited Lima in June ." in first_prompt and first_prompt.rstrip().endswith("JSON:")
    assert json.loads(first_target) == {"entities": [{"text": "Anna", "type": "person"},
                                                     {"text": "Paris", "type": "location"}]}


# ------------------------------------------------------------------------------------ inference modes


def test_router_through_the_extractor_sends_each_input_to_its_language(examples):
    engine = CountingEngine(lambda r: EMPTY)
    router = build_router(examples, ADAPTERS, k=3)
    ex = RetrieveAllExtractor(engine, builder(), examples, ADAPTERS, mode="routed", router=router,
                              show_progress=False)
    preds = list(ex.extract(QUERIES))
    assert len(engine.batches) == 1  # one engine call for the mixed-language batch
    assert [r.adapter for r in engine.batches[0]] == ["ra-en", "ra-de", "ra-ru"]
    for q, p, req in zip(QUERIES, preds, engine.batches[0], strict=True):
        assert p.meta["adapter"] == ADAPTERS[q.lang] and p.meta["route"]["value"] == q.lang
        assert p.meta["mode"] == "routed" and not p.meta["route"]["fallback"]
        sel = p.meta["demonstrations"]
        assert sel["pool"] == q.lang and sel["picks"]
        assert all(pick["record_id"].startswith(q.lang) for pick in sel["picks"])
        shown = [r for r in POOL if r.text in req.prompt]
        assert shown and all(r.lang == q.lang for r in shown)


def test_modes_send_the_right_adapter_per_request(examples):
    # q-mislabelled says German but is English: oracle trusts the label, routing reads the text
    queries = [*QUERIES, Record("q-mis", "Elena visited Cairo in June .", lang="de")]
    router = build_router(examples, ADAPTERS, k=3, min_confidence=0.5, fallback="ra-shared")
    expected = {"oracle": ["ra-en", "ra-de", "ra-ru", "ra-de"], "shared": ["ra-shared"] * 4,
                "routed": ["ra-en", "ra-de", "ra-ru", "ra-en"]}
    for mode, want in expected.items():
        engine = CountingEngine(lambda r: EMPTY)
        ex = RetrieveAllExtractor(engine, builder(), examples, ADAPTERS, mode=mode, shared_adapter="ra-shared",
                                  router=router if mode == "routed" else None, batch_size=2, show_progress=False)
        preds = list(ex.extract(queries))
        assert [len(b) for b in engine.batches] == [2, 2]  # one call per batch, never one per adapter
        assert [r.adapter for b in engine.batches for r in b] == want, mode
        assert [p.meta["adapter"] for p in preds] == want
        pools = [p.meta["demonstrations"]["pool"] for p in preds]
        assert pools == {"oracle": ["en", "de", "ru", "de"], "shared": ["all"] * 4,
                         "routed": ["en", "de", "ru", "en"]}[mode]
    # a split vote falls back (to the shared adapter, demonstrations from the union pool)
    strict = build_router(examples, ADAPTERS, k=15, min_confidence=0.99, fallback="ra-shared")
    engine = CountingEngine(lambda r: EMPTY)
    ex = RetrieveAllExtractor(engine, builder(), examples, ADAPTERS, mode="routed", router=strict,
                              show_progress=False)
    [pred] = ex.extract([QUERIES[0]])
    assert engine.batches[0][0].adapter == "ra-shared" and pred.meta["route"]["fallback"]
    assert pred.meta["demonstrations"]["pool"] == "all"


def test_extractor_refuses_what_it_cannot_do(examples):
    engine = ScriptedEngine(lambda r: EMPTY)
    with pytest.raises(RetrieveAllError, match="needs shared_adapter"):
        RetrieveAllExtractor(engine, builder(), examples, ADAPTERS, mode="shared")
    with pytest.raises(RetrieveAllError, match="needs a router"):
        RetrieveAllExtractor(engine, builder(), examples, ADAPTERS, mode="routed")
    with pytest.raises(RetrieveAllError, match="unknown mode"):
        RetrieveAllExtractor(engine, builder(), examples, ADAPTERS, mode="best")
    oracle = RetrieveAllExtractor(engine, builder(), examples, ADAPTERS, mode="oracle", show_progress=False)
    with pytest.raises(RetrieveAllError, match=r"no adapter for language\(s\) \['fr'\]"):
        list(oracle.extract([Record("f", "Bonjour Paris .", lang="fr")]))


# ------------------------------------------------------------------------------------ representations on tiny models


def test_llm_and_sentence_representations(tiny_decoder_path, tiny_bert_path, tmp_path):
    from openie.methods.retrieveall import LLMRepresentation, SentenceRepresentation

    llm = LLMRepresentation(str(tiny_decoder_path), layer=1)
    texts = ["Anna visited Paris", "Anna visited Paris today", "Siemens is in Berlin"]
    sent, spans = llm.encode(texts, [[(0, 4), (13, 18)], [(0, 4)], []])
    assert sent.shape[0] == 3 and np.allclose(np.linalg.norm(sent, axis=1), 1.0, atol=1e-5)
    assert [s.shape[0] for s in spans] == [2, 1, 0]
    assert np.allclose(spans[0][0], spans[1][0], atol=1e-5)  # causal: same left context, same mention vector
    assert not np.allclose(sent[0], sent[1])
    llm.save(tmp_path / "v.npz")
    fresh = LLMRepresentation(str(tiny_decoder_path), layer=1)
    assert fresh.load(tmp_path / "v.npz") == 3
    again, _ = fresh.encode(texts, [[(0, 4), (13, 18)], [(0, 4)], []])
    assert fresh._encoder is None and np.array_equal(again, sent)  # served from the memo, no model loaded
    st = SentenceRepresentation(str(tiny_bert_path))
    s2, sp2 = st.encode(texts[:2], [[(0, 4)], []])
    assert s2.shape[0] == 2 and sp2[0].shape == (1, s2.shape[1]) and sp2[1].shape[0] == 0


# ------------------------------------------------------------------------------------ a real vLLM engine


def test_mixed_language_batch_reaches_the_right_adapters_in_one_vllm_call(long_decoder, examples, tmp_path):
    pytest.importorskip("vllm")
    from openie.engines.vllm_offline import VLLMEngine
    from openie.testing import build_random_lora

    loras = {name: build_random_lora(long_decoder, tmp_path / name, seed=7 + i) for i, name in enumerate(ADAPTERS.values())}
    engine = VLLMEngine(long_decoder, loras, max_loras=3, dtype="float32", max_model_len=2048,
                        kv_cache_memory_bytes=64 * 2**20, seed=0, group_by_adapter=False)
    try:
        calls = []
        real_generate = engine.llm.generate

        def counted(*args, **kwargs):
            calls.append(kwargs.get("lora_request"))
            return real_generate(*args, **kwargs)

        engine._llm.generate = counted
        tap: list = []

        class Tap:  # the real engine, with its generations kept
            def __getattr__(self, name):
                return getattr(engine, name)

            def generate(self, requests):
                out = engine.generate(requests)
                tap.append((list(requests), out))
                return out

        router = build_router(examples, ADAPTERS, k=3)
        ex = RetrieveAllExtractor(Tap(), builder(), examples, ADAPTERS, mode="routed", router=router,
                                  max_tokens=8, constrained=False, show_progress=False)
        queries = [QUERIES[0], QUERIES[2], QUERIES[1], Record("q-en2", "Farid met Hiro .", lang="en")]
        list(ex.extract(queries))
        assert len(calls) == 1 and len(tap) == 1  # the whole mixed batch: one vLLM generate
        requests, mixed = tap[0]
        assert [r.adapter for r in requests] == ["ra-en", "ra-ru", "ra-de", "ra-en"]
        assert [lr.lora_name.split("@")[0] for lr in calls[0]] == ["ra-en", "ra-ru", "ra-de", "ra-en"]
        engine.group_by_adapter = True
        for request, got in zip(requests, mixed, strict=True):
            alone = engine.generate([request])[0].text
            assert got.text == alone  # what its own adapter writes, unaffected by its neighbours
            others = {engine.generate([replace(request, adapter=a)])[0].text
                      for a in ADAPTERS.values() if a != request.adapter}
            assert alone not in others  # the adapters really differ: a wrong route would show
    finally:
        engine.close()


# ------------------------------------------------------------------------------------ the experiment runner


def _write_config(tmp_path: Path, model: Path, **changes) -> Path:
    cfg = {
        "name": "retrieveall-tiny", "base_model": str(model), "output": "out", "adapter_prefix": "tiny",
        "modes": ["shared", "routed", "oracle"],
        "data": {"languages": ["en", "de"], "n_train": 6, "n_dev": 3, "seed": 0},
        "representation": {"kind": "llm", "layer": 1, "dtype": "float32"},
        "augmentation": {"n_std": 1.0, "max_demonstrations": 2},
        "training": {"rank": 4, "alpha": 8, "lr": 1e-3, "max_steps": 2, "batch_size": 2, "save_every": 1,
                     "device": "cpu", "dtype": "float32"},
        "routing": {"k": 3, "min_confidence": 0.5, "fallback": "shared"},
        "inference": {"template": "ner.json.v1", "max_tokens": 12, "batch_size": 4, "constrained": False},
        "engine": {"backend": "hf", "dtype": "float32", "options": {"device": "cpu", "batch_size": 8}},
    }
    for key, value in changes.items():
        section, _, sub = key.partition(".")
        if sub:
            cfg[section][sub] = value
        else:
            cfg[section] = value
    import yaml

    path = tmp_path / "retrieveall.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def test_experiment_end_to_end_on_a_tiny_model(shared_data, long_decoder, tmp_path):
    from openie.methods.retrieveall.fit import run_retrieveall_experiment

    config = _write_config(tmp_path, long_decoder)
    logs: list[str] = []
    results = run_retrieveall_experiment(config, show_progress=False, log=logs.append)
    out = tmp_path / "out"
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert saved["config"]["data"]["n_train"] == 6 and saved["config"]["base_model"] == str(long_decoder)
    assert saved["config_file"] == str(config.resolve())
    stages = saved["stages"]
    assert stages["data"]["languages"]["de"]["train"] == 6 and stages["data"]["languages"]["en"]["dev"] == 3
    aug = stages["augmentation"]["per_language"]
    assert {lang: a["prompts"] for lang, a in aug.items()} == {"en": 6, "de": 6}
    assert stages["training"]["en"]["steps"] == 2 and stages["training"]["shared"]["steps"] == 4  # 2 languages x 2
    assert stages["training"]["shared"]["pairs"] == 12 and stages["training"]["de"]["name"] == "tiny-de"
    for mode in ("shared", "routed", "oracle"):
        scores = saved["scores"][mode]
        assert set(scores) == {"en", "de", "mean_f1"}
        assert all(0.0 <= scores[lang]["f1"] <= 1.0 and scores[lang]["records"] == 3 for lang in ("en", "de"))
        assert scores["mean_f1"] == pytest.approx((scores["en"]["f1"] + scores["de"]["f1"]) / 2, abs=1e-4)
        assert stages["evaluation"][mode]["records"] == 6
    preds = {mode: [json.loads(line) for line in Path(stages["evaluation"][mode]["predictions"]).open()]
             for mode in ("shared", "routed", "oracle")}
    assert {p["meta"]["adapter"] for p in preds["shared"]} == {"tiny-shared"}
    assert all(p["meta"]["adapter"] == f"tiny-{p['lang']}" for p in preds["oracle"])
    routing = saved["routing"]
    for lang in ("en", "de"):
        mine = [p for p in preds["routed"] if p["lang"] == lang]
        assert routing[lang]["accuracy"] == pytest.approx(
            sum(p["meta"]["route"]["value"] == lang for p in mine) / len(mine), abs=1e-4)
        assert all(p["meta"]["adapter"] in ("tiny-en", "tiny-de", "tiny-shared") for p in mine)
    report = (out / "report.md").read_text()
    assert "| mode | en | de | mean |" in report and "## Routing" in report and "## Adapters" in report

    logs.clear()
    again = run_retrieveall_experiment(config, show_progress=False, log=logs.append)
    assert any("augmentation: done earlier" in line for line in logs)
    assert any("training: de, en, shared done earlier" in line for line in logs)
    assert sum("done earlier, skipped" in line and line.startswith("evaluation") for line in logs) == 3
    assert again["scores"] == saved["scores"]

    # the finished run as an extraction method: same adapters, pools and routing as its evaluation
    from openie.experiments.extract import extract_file
    from openie.records import read_jsonl, write_jsonl

    gold = {r.id: r for r in (Record.from_dict(p) for p in preds["routed"])}
    inputs = tmp_path / "in.jsonl"
    write_jsonl(list(gold.values()), inputs)
    out_file = tmp_path / "extracted.jsonl"
    extract_file(inputs, out_file, method="retrieveall", method_options={"config": str(config), "mode": "routed"},
                 backend="hf", model=str(long_decoder), engine_options={"device": "cpu"}, schema=prompt_schema(),
                 show_progress=False, max_tokens=12, constrained=False)
    extracted = list(read_jsonl(out_file))
    assert [p.id for p in extracted] == list(gold)
    for p in extracted:
        assert p.meta["adapter"] == gold[p.id].meta["adapter"] and p.meta["route"] == gold[p.id].meta["route"]

    # the same settings through openie extract and a grid cell: one job, the same predictions
    from openie.experiments.run import run_experiment

    options = {"config": str(config), "mode": "routed"}
    extract_file("conll2003:dev", tmp_path / "conll.jsonl", method="retrieveall", method_options=options, limit=3,
                 backend="hf", model=str(long_decoder), engine_options={"device": "cpu"}, show_progress=False,
                 max_tokens=12, constrained=False)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"name: ra\ndataset: conll2003\nsplit: dev\nlimit: 3\n"
                    f"method: {{name: retrieveall, max_tokens: 12, constrained: false, "
                    f"options: {{config: {config}, mode: routed}}}}\n"
                    f"engine: {{backend: hf, model: {long_decoder}, options: {{device: cpu}}}}\n", encoding="utf-8")
    [outcome] = run_experiment(grid, tmp_path / "grid", show_progress=False, log=lambda m: None)

    def seen(path):
        return [(p.id, p.meta["adapter"], p.meta["route"], [(e.start, e.end, e.label) for e in p.entities])
                for p in read_jsonl(path)]

    assert seen(tmp_path / "conll.jsonl") == seen(outcome.path / "predictions.jsonl")
    assert len(seen(tmp_path / "conll.jsonl")) == 3


def test_each_mode_asks_for_the_adapters_it_sends_requests_to(tmp_path):
    from openie.methods.retrieveall.fit import RetrieveAllConfig

    cfg = RetrieveAllConfig.load(_write_config(tmp_path, tmp_path))  # en, de; fallback shared
    assert cfg.adapter_keys(["shared"]) == ["shared"]
    assert cfg.adapter_keys(["oracle"]) == ["en", "de"]  # a fallback only matters when routing
    assert cfg.adapter_keys(["routed"]) == ["en", "de", "shared"]
    assert cfg.adapter_keys() == ["en", "de", "shared"] and cfg.needs_shared
    no_fallback = RetrieveAllConfig.load(_write_config(tmp_path, tmp_path, modes=["routed", "oracle"],
                                                       **{"routing.fallback": None}))
    assert no_fallback.adapter_keys() == ["en", "de"] and not no_fallback.needs_shared


def test_a_shared_only_run_trains_only_the_shared_adapter(shared_data, long_decoder, tmp_path):
    """Equal updates: a shared adapter of max_steps steps, no per-language adapter trained or asked for."""
    from openie.methods.retrieveall.fit import (
        RetrieveAllConfig,
        RetrieveAllError,
        run_retrieveall_experiment,
        trained_adapters,
    )

    config = _write_config(tmp_path, long_decoder, modes=["shared"], **{"training.shared_max_steps": 2})
    results = run_retrieveall_experiment(config, show_progress=False, log=lambda m: None)
    assert set(results["stages"]["training"]) == {"shared"} and results["stages"]["training"]["shared"]["steps"] == 2
    assert set(results["scores"]) == {"shared"}
    cfg = RetrieveAllConfig.load(config)
    paths, _, shared = trained_adapters(cfg, "shared")
    assert set(paths) == {"tiny-shared"} and shared == "tiny-shared"
    with pytest.raises(RetrieveAllError, match=r"mode 'routed' needs the adapter\(s\) \['en', 'de'\]"):
        trained_adapters(cfg, "routed")


@pytest.mark.parametrize("changes,key,message", [
    ({"modes": ["shared", "best"]}, "modes[1]", "unknown mode 'best'"),
    ({"data.languages": ["en", "fr"]}, "data.languages[1]", "no corpus for language 'fr'"),
    ({"routing.fallback": "ru"}, "routing.fallback", "unknown fallback adapter 'ru'"),
    ({"data.n_train": 2}, "data.n_train", "at least 3 training sentences"),
    ({"augmentation": {"per_level": 0}}, "augmentation", "per_level must be >= 1"),
    ({"training": {"max_step": 3}}, "training.max_step", "did you mean 'max_steps'"),
    ({"inference.template": "re.json.v1"}, "inference.template", "not ner"),
    ({"representation.kind": "bert"}, "representation.kind", "unknown representation 'bert'"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, changes, key, message):
    from openie.experiments.config import ConfigError
    from openie.methods.retrieveall.fit import RetrieveAllConfig

    path = _write_config(tmp_path, tmp_path, **changes)
    with pytest.raises(ConfigError) as err:
        RetrieveAllConfig.load(path)
    text = str(err.value)
    assert str(path) in text and key in text and message in text and "line " in text


def test_the_committed_config_loads():
    from openie.methods.retrieveall.fit import RetrieveAllConfig

    path = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "retrieveall.yaml"
    cfg = RetrieveAllConfig.load(path)
    assert cfg.base_model == "gemma-3-270m" and cfg.data.languages == ["en", "de", "ru", "tr"]
    assert cfg.modes == ["shared", "routed", "oracle"] and cfg.engine.backend == "vllm"
    assert Path(cfg.output).is_absolute() and cfg.output.endswith("experiments/results/retrieveall")
