"""The tiny test models: real architectures and tokenizers, built offline, deterministic."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from openie.testing import (  # noqa: E402
    CHAT_SPECIAL_TOKENS,
    EOS_TOKEN,
    build_tiny_bert,
    build_tiny_decoder,
    build_tiny_tokenizer,
    tiny_corpus,
)

TEXTS = [
    "Marie Curie was born in Warsaw in 1867.",
    "  leading spaces, trailing spaces  ",
    "Tabs\tand\nnewlines\n\n and ünïcödé: 日本語 😀",
    '{"entities": [{"text": "Paris", "type": "location"}]}',
]


def test_corpus_is_a_few_hundred_words_or_more():
    words = " ".join(tiny_corpus()).split()
    assert len(words) > 300
    assert tiny_corpus() == tiny_corpus()


def test_tiny_tokenizer_round_trips_and_has_pieces(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(tmp_path / "tok"))
    assert 500 <= len(tok) <= 1000
    assert tok.bos_token == tok.eos_token == tok.pad_token == EOS_TOKEN
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
    pieces = tok.tokenize("Marie Curie visited the capital of France")
    assert len(pieces) < 2 * 7 and sum(len(p) > 3 for p in pieces) >= 4
    for special in (EOS_TOKEN, *CHAT_SPECIAL_TOKENS):
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


def test_tiny_tokenizer_chat_template(tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_tokenizer(tmp_path / "tok"))
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                                   add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_tokenizer_is_deterministic(tmp_path):
    a = build_tiny_tokenizer(tmp_path / "a") / "tokenizer.json"
    b = build_tiny_tokenizer(tmp_path / "b") / "tokenizer.json"
    assert a.read_bytes() == b.read_bytes()


def test_tiny_decoder_loads_and_generates(tiny_decoder_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_decoder_path)
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path).eval()
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (64, 2, 2)
    assert cfg.hidden_size // cfg.num_attention_heads == 32
    assert cfg.max_position_embeddings == 512 and cfg.tie_word_embeddings is False
    assert model.dtype == torch.float32 and cfg.vocab_size == len(tok)
    # the tokenizer class transformers picks for a qwen2 checkpoint must tokenize as trained
    assert tok.decode(tok(TEXTS[0])["input_ids"]) == TEXTS[0]

    inputs = tok.apply_chat_template([{"role": "user", "content": "Who is Marie Curie?"}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        first = model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
        second = model.generate(**inputs, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert first.shape[1] == n + 6
    assert torch.equal(first, second)
    assert isinstance(tok.decode(first[0, n:]), str)


def test_tiny_llama_loads_and_generates(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_decoder(tmp_path / "llama", arch="llama")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.head_dim == 32
    inputs = tok("Berlin is a city in", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_tiny_decoder_weights_depend_only_on_seed(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_decoder(tmp_path / "a", seed=0) / "model.safetensors")
    b = load_file(build_tiny_decoder(tmp_path / "b", seed=0) / "model.safetensors")
    c = load_file(build_tiny_decoder(tmp_path / "c", seed=1) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    assert "lm_head.weight" in a  # untied embeddings are saved separately


def test_tiny_decoder_rejects_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="arch"):
        build_tiny_decoder(tmp_path / "x", arch="gpt2")
    with pytest.raises(ValueError, match="head_dim"):
        build_tiny_decoder(tmp_path / "y", hidden_size=64, num_heads=4)


def test_tiny_bert_loads_and_embeds(tiny_bert_path):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert_path)
    assert tok.tokenize("Marie Curie VISITED Paris.") == ["marie", "curie", "visited", "paris", "."]
    model = AutoModel.from_pretrained(tiny_bert_path).eval()
    assert type(model).__name__ == "BertModel" and model.config.num_hidden_layers == 2
    with torch.no_grad():
        hidden = model(**tok(["hello world"], return_tensors="pt")).last_hidden_state
    assert hidden.shape[-1] == model.config.hidden_size

    st = SentenceTransformer(str(tiny_bert_path), device="cpu")
    emb = st.encode(["Marie Curie was a physicist.", "Berlin is the capital of Germany."], convert_to_tensor=True)
    assert emb.shape == (2, model.config.hidden_size)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])
    again = st.encode(["Marie Curie was a physicist."], convert_to_tensor=True)
    assert torch.allclose(again[0], emb[0], atol=1e-6)


def test_tiny_bert_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_bert(tmp_path / "a") / "model.safetensors")
    b = load_file(build_tiny_bert(tmp_path / "b") / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
