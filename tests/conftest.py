"""Test session set-up: offline hub, one torch thread, shared data root."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared corpora folder; tests that need it skip where it is absent (a user's machine)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared corpora not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session", autouse=True)
def _torch_one_thread():
    """Tiny-model tests run far faster on one thread on 2 busy cores; core tests need no torch at all."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_decoder_path(tmp_path_factory) -> Path:
    """A tiny random Qwen2 causal LM with a byte-level BPE tokenizer and a ChatML template, built once."""
    pytest.importorskip("torch")
    from openie.testing import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-decoder") / "model")


@pytest.fixture(scope="session")
def long_decoder(tmp_path_factory) -> Path:
    """The tiny decoder with room for few-shot NER prompts (``tiny_decoder_path`` has 512 positions)."""
    pytest.importorskip("torch")
    from openie.testing import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp("long-decoder") / "model", max_positions=2048)


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory) -> Path:
    """A tiny random uncased BERT (WordPiece) with sentence-transformers files, built once."""
    pytest.importorskip("torch")
    from openie.testing import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_gliner_path(tiny_bert_path, tmp_path_factory) -> Path:
    """A GLiNER on the tiny BERT (untrained heads, seeded), saved as a checkpoint once."""
    from openie.tools.gliner import GLiNERTool

    tool = GLiNERTool.load(tiny_bert_path, max_width=4, max_len=64, show_progress=False)
    return tool.save(tmp_path_factory.mktemp("tiny-gliner") / "model")


@pytest.fixture(scope="session")
def toy_bm25():
    """BM25 over ``openie.testing.toy_pool(12)``: the demonstration pool of the agent tests."""
    from openie.testing import toy_pool
    from retrievers.bm25 import BM25Retriever

    retriever = BM25Retriever(show_progress=False)
    retriever.index(toy_pool(12))
    return retriever


@pytest.fixture(scope="session")
def tiny_spacy_path(tmp_path_factory) -> Path:
    """A real spaCy pipeline saved to disk: blank English with an entity ruler using OntoNotes types."""
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns([{"label": "PERSON", "pattern": name} for name in ("alice", "bob", "grace")]
                       + [{"label": "GPE", "pattern": city} for city in ("paris", "berlin", "tokyo")]
                       + [{"label": "DATE", "pattern": "monday"}, {"label": "ORG", "pattern": "acme"}])
    path = tmp_path_factory.mktemp("spacy") / "tiny_ruler"
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def corpus_slices(shared_data):
    """``corpus_slices(name, n)``: the first ``n`` records of each split of a registered corpus that exists here."""
    from openie.datasets import get_dataset, load_dataset

    def slices(name: str, n: int = 50):
        records = []
        for split in get_dataset(name).splits:
            try:
                records += load_dataset(name, split)[:n]
            except FileNotFoundError:
                continue
        assert records, f"no split of {name} is available"
        return records

    return slices


@pytest.fixture(scope="session")
def hf_model(tiny_decoder_path):
    """The tiny decoder in transformers, float32: the reference engines' greedy texts and scores are checked against."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_decoder_path, dtype=torch.float32).eval()
