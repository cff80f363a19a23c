"""Tiny, deterministic models built locally for tests: no network, under a second each.

Tests need real components (a real engine, a real adapter, a real sentence embedder), never
mocks of them; these builders give real architectures with random weights and real tokenizers
trained here on a small built-in English corpus. The same arguments give the same files.

- ``build_tiny_tokenizer``: byte-level BPE (~700 pieces), ``<|endoftext|>`` as bos/eos/pad, a ChatML template.
- ``build_tiny_decoder``: Qwen2 (default) or Llama, hidden 64, 2 layers, 2 heads of dim 32
  (vLLM's CPU attention needs head_dim >= 32), 512 positions, float32, untied embeddings.
- ``build_tiny_bert``: uncased WordPiece BERT (hidden 32, 2 layers) with sentence-transformers files.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

EOS_TOKEN = "<|endoftext|>"
CHAT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")

#: ChatML, the format of SmolLM2 and Qwen2: tests of chat paths behave like the real default.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: transformers' Qwen2Tokenizer pattern (digits one by one, letters with one leading non-letter).
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_PROSE = """\
Information extraction turns plain text into structured records. A named entity is a span of text
that refers to a person, an organization, a location or another thing with a name. Marie Curie was
a physicist and chemist who worked in Paris. She was born in Warsaw in 1867 and received the Nobel
Prize in Physics in 1903 together with Pierre Curie and Henri Becquerel. Later she received a second
Nobel Prize, in Chemistry, for the discovery of radium and polonium.
The river Thames flows through London, the capital of the United Kingdom. Berlin is the capital of
Germany and Paris is the capital of France. Rome, Madrid and Lisbon are cities in southern Europe.
Apple Inc. is a technology company based in Cupertino, California. It was founded by Steve Jobs,
Steve Wozniak and Ronald Wayne in April 1976. Microsoft was founded by Bill Gates and Paul Allen in
Albuquerque, New Mexico, and later moved to Redmond, Washington. Google is a subsidiary of Alphabet.
A relation connects two entities: a person works for a company, a city is located in a country, a
company is headquartered in a city. An event has a trigger word and arguments with roles, such as an
attack with an attacker, a target and a place, or an election with a winner and a date.
The quick brown fox jumps over the lazy dog near the river bank. The weather was cold in January and
warm in July. On Monday the committee met to discuss the budget for the next year, and on Friday the
minister announced that the new hospital would open in the spring.
Researchers compare methods on shared benchmarks. They report precision, recall and F1 score, and
they tune their prompts and adapters on the development set before they evaluate on the test set.
A good model reads the schema, follows the instructions and answers in valid JSON: {"entities":
[{"text": "Marie Curie", "type": "person"}, {"text": "Paris", "type": "location"}]}.
"""

_PEOPLE = ["Alice Johnson", "Bob Smith", "Carlos Diaz", "Dana Lee", "Elena Rossi", "Farid Khan", "Grace Hopper",
           "Hiro Tanaka", "Ingrid Berg", "Jamal Wright"]
_ORGS = ["Acme Corporation", "the United Nations", "Siemens", "the University of Oxford", "Reuters", "the World Bank",
         "Toyota", "the Red Cross"]
_PLACES = ["London", "Berlin", "Paris", "Tokyo", "Nairobi", "Toronto", "Sydney", "Cairo", "Mumbai", "Chicago"]
_VERBS = ["works for", "joined", "left", "visited", "criticized", "praised", "met with", "sued"]
_TIMES = ["on Monday", "in 2019", "last year", "in March", "yesterday", "on 4 July 2021"]


def tiny_corpus() -> list[str]:
    """The built-in English corpus: a few hundred words of prose plus templated IE-style sentences."""
    rng = random.Random(0)
    lines = [line for line in _PROSE.splitlines() if line.strip()]
    combos = list(itertools.product(_PEOPLE, _VERBS, _ORGS))
    rng.shuffle(combos)
    for person, verb, org in combos[:240]:
        place, when = rng.choice(_PLACES), rng.choice(_TIMES)
        lines.append(f"{person} {verb} {org} in {place} {when}.")
    return lines


def build_tiny_tokenizer(path: str | Path, vocab_size: int = 768) -> Path:
    """Train a byte-level BPE on the built-in corpus and save it as a ``PreTrainedTokenizerFast`` folder.

    Byte-level, so any NFC string round-trips exactly; no BOS is added (like Qwen2 and SmolLM2).
    The normaliser and pre-tokeniser are Qwen2's: transformers 5 loads a ``qwen2`` checkpoint's
    tokenizer as ``Qwen2Tokenizer`` whatever the folder says, rebuilding that pipeline around the
    saved vocabulary, so training with it keeps ``tokenizer.json`` and the loaded class in agreement.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[EOS_TOKEN, *CHAT_SPECIAL_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tiny_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN,
                                   pad_token=EOS_TOKEN, unk_token=None, model_max_length=512,
                                   extra_special_tokens=list(CHAT_SPECIAL_TOKENS), chat_template=CHATML_TEMPLATE)
    fast.save_pretrained(path)
    return path


def build_tiny_decoder(path: str | Path, arch: str = "qwen2", *, hidden_size: int = 64, num_layers: int = 2,
                       num_heads: int = 2, num_kv_heads: int = 2, max_positions: int = 512, seed: int = 0) -> Path:
    """A tiny random causal LM (``arch`` "qwen2" or "llama") saved with its tokenizer; returns ``path``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, Qwen2Config

    if arch not in ("qwen2", "llama"):
        raise ValueError(f"unknown tiny decoder arch {arch!r}; choose 'qwen2' or 'llama'")
    if hidden_size // num_heads < 32:
        raise ValueError("head_dim (hidden_size // num_heads) below 32 breaks vLLM's CPU attention")
    path = Path(path)
    build_tiny_tokenizer(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
                  max_position_embeddings=max_positions, tie_word_embeddings=False,
                  bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, rms_norm_eps=1e-6)
    if arch == "qwen2":
        config = Qwen2Config(**common)
    else:
        config = LlamaConfig(**common, head_dim=hidden_size // num_heads)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path, safe_serialization=True)
    return path


def _wordpiece_vocab(size: int) -> list[str]:
    """Specials, every corpus character (alone and as ``##`` continuation), then words by frequency.

    Built by counting rather than with ``tokenizers``' WordPieceTrainer, whose vocabulary
    (even its set of pieces) changes from run to run on ties.
    """
    from collections import Counter

    from tokenizers import normalizers, pre_tokenizers

    normalizer, splitter = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    counts = Counter(word for line in tiny_corpus()
                     for word, _ in splitter.pre_tokenize_str(normalizer.normalize_str(line)))
    chars = sorted({c for word in counts for c in word})
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if len(w) > 1]
    return pieces + words[: max(0, size - len(pieces))]


def build_tiny_bert(path: str | Path, *, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2,
                    vocab_size: int = 1000, max_positions: int = 512, seed: int = 0) -> Path:
    """A tiny random uncased BERT with a WordPiece vocabulary counted from the corpus, laid out like all-MiniLM-L6-v2.

    Loads with ``AutoModel`` / ``AutoTokenizer`` and as a ``SentenceTransformer`` (mean pooling,
    normalised embeddings), so embedders, rerankers and GLiNER backbones can be tested on it.
    """
    import torch
    from transformers import AutoModel, BertConfig, BertTokenizer

    path = Path(path)
    vocab = {piece: i for i, piece in enumerate(_wordpiece_vocab(vocab_size))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=max_positions)
    tokenizer.save_pretrained(path)

    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden_size, num_hidden_layers=num_layers,
                        num_attention_heads=num_heads, intermediate_size=2 * hidden_size,
                        max_position_embeddings=max_positions, pad_token_id=vocab["[PAD]"])
    torch.manual_seed(seed)
    AutoModel.from_config(config, dtype=torch.float32).save_pretrained(path, safe_serialization=True)

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pooling = {"word_embedding_dimension": hidden_size, "pooling_mode_cls_token": False,
               "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
               "pooling_mode_mean_sqrt_len_tokens": False}
    (path / "modules.json").write_text(json.dumps(modules, indent=2))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (path / "2_Normalize").mkdir(exist_ok=True)
    return path


__all__ = ["CHATML_TEMPLATE", "EOS_TOKEN", "TOY_SCHEMA", "build_random_lora", "build_tiny_bert", "build_tiny_decoder",
           "build_tiny_tokenizer", "reference_greedy", "reference_logprob", "tiny_corpus", "toy_pool", "toy_preference"]


def build_random_lora(base: str | Path, path: str | Path, seed: int = 0, *, rank: int = 8, scale: float = 1.0,
                      target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> Path:
    """A peft LoRA adapter with random A *and* B: peft zeroes B by default, which changes nothing.

    Distinct seeds give adapters with distinct outputs (tests of routing and mixed batches);
    ``scale`` shrinks the update for benchmarks that want realistic generations.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(target_modules),
                                            init_lora_weights=False))
    if scale != 1.0:
        with torch.no_grad():
            for p in peft.parameters():
                if p.requires_grad:
                    p.mul_(scale)
    peft.save_pretrained(path)
    return Path(path)


def reference_greedy(model, tokenizer, ids: list[int], max_new: int) -> str:
    """transformers' greedy continuation of token ``ids``: what every engine's greedy text is checked against.

    A random model's byte-level tokens can end inside a UTF-8 sequence: vLLM's detokenizer holds such
    trailing bytes back, transformers decodes them as U+FFFD, so that character is stripped.
    """
    import torch

    eos = tokenizer.eos_token_id
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    new = out[0, len(ids):].tolist()
    if eos in new:
        new = new[:new.index(eos)]
    return tokenizer.decode(new, skip_special_tokens=True).rstrip("\ufffd")


def reference_logprob(model, ctx: list[int], cont: list[int]) -> float:
    """Summed log-probability of token ids ``cont`` after ``ctx`` from a transformers model, in float64."""
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([ctx + cont])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return float(sum(lp[len(ctx) + k - 1, tok] for k, tok in enumerate(cont)))


# --------------------------------------------------------------------------- a toy labelled pool

_TOY_NAMES = ("Anna", "Boris", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hiro")
_TOY_CITIES = ("Paris", "Lima", "Oslo", "Kyoto", "Cairo", "Quito")
_TOY_ORGS = ("Siemens", "Oxfam", "Nokia", "Airbus", "Unesco")
_TOY_PRODUCTS = ("Walkman", "Kindle", "Segway", "Vespa")
TOY_SCHEMA = {"ner": ["person", "location", "organization", "product"], "re": ["lives_in", "works_for"]}


def toy_pool(n: int, seed: int = 0, *, relations: bool = False, dataset: str = "toy") -> list:
    """``n`` labelled sentences of three kinds (person-location, person-organization, product-organization).

    Tagged like ``openie.datasets.load_pool`` output (dataset, task, schema); with ``relations`` the
    first two kinds also appear as RE examples (``lives_in`` / ``works_for``). Retriever training
    tests use it with ``toy_preference``: demonstrations of the query's kind help most.
    """
    from openie.records import Entity, Record, Relation

    rng = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            parts = [(rng.choice(_TOY_NAMES), "person"), " visited ", (rng.choice(_TOY_CITIES), "location"), " last year ."]
        elif kind == 1:
            parts = [(rng.choice(_TOY_NAMES), "person"), " joined ", (rng.choice(_TOY_ORGS), "organization"), f" in {1990 + i} ."]
        else:
            parts = ["The ", (rng.choice(_TOY_PRODUCTS), "product"), " was sold by ", (rng.choice(_TOY_ORGS), "organization"), " ."]
        text, entities = "", []
        for part in parts:
            if isinstance(part, tuple):
                entities.append(Entity(len(text), len(text) + len(part[0]), part[1], part[0]))
                text += part[0]
            else:
                text += part
        meta = {"dataset": dataset, "task": "ner", "schema": dict(TOY_SCHEMA), "kind": kind}
        out.append(Record(f"{dataset}-{seed}-{i}", text, entities=entities, meta=meta))
        if relations and kind < 2:
            rel = Relation(entities[0], entities[1], "lives_in" if kind == 0 else "works_for")
            out.append(Record(f"{dataset}-{seed}-{i}", text, entities=entities, relations=[rel],
                              meta={**meta, "task": "re"}))
    return out


def toy_preference(request) -> float:
    """A scripted LLM preference for ``toy_pool`` (``ScriptedEngine(scores=toy_preference)``).

    The per-word mean log-likelihood it yields is the Jaccard overlap of the gold answer's labels
    with the candidate's (the first ``Output:`` line of the context) minus 1: same-kind
    demonstrations score 0, unrelated ones -1.
    """
    import re

    def labels(answer: str) -> set[str]:
        return {item.split(":")[0].strip() for item in answer.split(";") if ":" in item}

    outputs = re.findall(r"^Output: (.+)$", request.context, flags=re.M)
    query, candidate = labels(request.continuation), labels(outputs[0]) if outputs else set()
    union = query | candidate
    mean = (len(query & candidate) / len(union) if union else 0.0) - 1.0
    return mean * max(1, len(request.continuation.split()))
