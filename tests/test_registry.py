"""AdapterRegistry: catalogue round trips and the checks that keep vLLM from loading a bad adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from openie.adapters.registry import (  # noqa: E402
    METADATA_FILE,
    AdapterCompatibilityError,
    AdapterInfo,
    AdapterRegistry,
    check_adapter_dir,
)
from openie.engines.hf import adapter_content_hash  # noqa: E402
from openie.errors import UnknownNameError  # noqa: E402


def make_adapter(base: Path, out: Path, *, seed: int = 0, rank: int = 4, **lora_kwargs) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    lora_kwargs.setdefault("target_modules", ["q_proj", "v_proj"])
    get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,
                                     **lora_kwargs)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_decoder_path, tmp_path_factory) -> Path:
    return make_adapter(tiny_decoder_path, tmp_path_factory.mktemp("reg") / "lora")


def test_register_get_list_remove_round_trip(tmp_path, adapter_dir, tiny_decoder_path):
    registry = AdapterRegistry(tmp_path / "registry")
    info = registry.register(adapter_dir, "ner-en", str(tiny_decoder_path), task="ner", languages=["en"],
                             labels=["person", "location"], training={"lr": 1e-3, "steps": 10},
                             metrics={"f1": 0.5})
    assert info.version == adapter_content_hash(adapter_dir)
    assert info.rank == 4 and info.alpha == 8.0 and info.target_modules == ["q_proj", "v_proj"]
    assert Path(info.path) == (tmp_path / "registry" / "ner-en").resolve()
    assert (Path(info.path) / "adapter_model.safetensors").is_file() and (Path(info.path) / METADATA_FILE).is_file()
    assert info.created

    again = AdapterRegistry(tmp_path / "registry").get("ner-en")  # a fresh registry object reads the files
    assert again == info
    assert again.task == "ner" and again.languages == ["en"] and again.labels == ["person", "location"]
    assert again.training == {"lr": 1e-3, "steps": 10} and again.metrics == {"f1": 0.5}
    assert AdapterInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info

    registry.register(adapter_dir, "ner-de", str(tiny_decoder_path), languages=["de"])
    assert [i.name for i in registry.list()] == ["ner-de", "ner-en"]
    assert "ner-de" in registry and "nope" not in registry

    registry.remove("ner-de")
    assert registry.names() == ["ner-en"]
    with pytest.raises(UnknownNameError, match=r"unknown adapter 'ner-de'; known: ner-en"):
        registry.get("ner-de")
    with pytest.raises(UnknownNameError):
        registry.remove("ner-de")
    assert adapter_dir.is_dir()  # the source folder is untouched


def test_names_are_folder_safe_and_not_silently_replaced(tmp_path, adapter_dir, tiny_decoder_path):
    registry = AdapterRegistry(tmp_path)
    with pytest.raises(ValueError, match="must match"):
        registry.register(adapter_dir, "../escape", str(tiny_decoder_path))
    registry.register(adapter_dir, "x", str(tiny_decoder_path))
    with pytest.raises(FileExistsError, match="already registered"):
        registry.register(adapter_dir, "x", str(tiny_decoder_path))


def test_retrained_adapter_gets_a_new_vllm_name(tmp_path, adapter_dir, tiny_decoder_path):
    registry = AdapterRegistry(tmp_path / "registry")
    first = registry.register(adapter_dir, "ner", str(tiny_decoder_path))
    assert registry.vllm_name("ner") == f"ner-{first.version[:12]}"
    retrained = make_adapter(tiny_decoder_path, tmp_path / "retrained", seed=5)
    second = registry.register(retrained, "ner", str(tiny_decoder_path), overwrite=True)
    assert second.version != first.version
    assert registry.vllm_name("ner") != first.vllm_name
    # the registered copy does not follow later changes of the source folder
    assert adapter_content_hash(registry.get("ner").path) == second.version


def test_register_without_copy_points_at_the_source(tmp_path, adapter_dir, tiny_decoder_path):
    registry = AdapterRegistry(tmp_path / "registry")
    info = registry.register(adapter_dir, "linked", str(tiny_decoder_path), copy=False)
    assert Path(info.path) == adapter_dir.resolve()
    assert sorted(os.listdir(tmp_path / "registry" / "linked")) == [METADATA_FILE]
    registry.remove("linked")
    assert (adapter_dir / "adapter_model.safetensors").is_file()


def test_check_accepts_a_compatible_adapter_whatever_the_path_spelling(tmp_path, adapter_dir, tiny_decoder_path,
                                                                       monkeypatch):
    registry = AdapterRegistry(tmp_path / "registry")
    registry.register(adapter_dir, "ok", str(tiny_decoder_path))
    assert registry.check("ok", str(tiny_decoder_path) + "/", max_rank=4).name == "ok"
    monkeypatch.chdir(tiny_decoder_path.parent)
    assert registry.check("ok", "./" + tiny_decoder_path.name, max_rank=8).name == "ok"


def test_check_refuses_another_base_model(tmp_path, adapter_dir, tiny_decoder_path):
    registry = AdapterRegistry(tmp_path / "registry")
    registry.register(adapter_dir, "ner", str(tiny_decoder_path))
    other = tmp_path / "other-base"
    other.mkdir()
    with pytest.raises(AdapterCompatibilityError, match=r"vLLM cannot load adapter 'ner'.*base model mismatch"):
        registry.check("ner", str(other))
    # a registry entry that claims another base is refused too, even if the peft config agrees
    registry.register(adapter_dir, "claims-other", "Qwen/Qwen2-0.5B")
    with pytest.raises(AdapterCompatibilityError, match=r"'Qwen/Qwen2-0.5B' \(registry\)"):
        registry.check("claims-other", str(tiny_decoder_path))


def test_check_refuses_a_rank_above_the_limit(tmp_path, tiny_decoder_path):
    registry = AdapterRegistry(tmp_path / "registry")
    registry.register(make_adapter(tiny_decoder_path, tmp_path / "r16", rank=16), "big", str(tiny_decoder_path))
    with pytest.raises(AdapterCompatibilityError, match=r"adapter 'big'.*LoRA rank 16 is above .*max_lora_rank 8"):
        registry.check("big", str(tiny_decoder_path), max_rank=8)
    assert registry.check("big", str(tiny_decoder_path), max_rank=16).rank == 16


def test_check_refuses_modules_to_save(tmp_path, tiny_decoder_path):
    registry = AdapterRegistry(tmp_path / "registry")
    path = make_adapter(tiny_decoder_path, tmp_path / "mts", modules_to_save=["lm_head"])
    registry.register(path, "mts", str(tiny_decoder_path))
    with pytest.raises(AdapterCompatibilityError, match=r"vLLM cannot load adapter 'mts'.*modules_to_save"):
        registry.check("mts", str(tiny_decoder_path))


def test_check_refuses_added_tokens_and_resized_embeddings(tmp_path, tiny_decoder_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_decoder_path)
    tokenizer.add_tokens(["<entity>", "</entity>"])
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path)
    model.resize_token_embeddings(len(tokenizer))
    out = tmp_path / "added"
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(out, save_embedding_layers=True)
    tokenizer.save_pretrained(out)

    registry = AdapterRegistry(tmp_path / "registry")
    registry.register(out, "added", str(tiny_decoder_path))
    with pytest.raises(AdapterCompatibilityError) as caught:
        registry.check("added", str(tiny_decoder_path))
    message = str(caught.value)
    assert "vLLM cannot load adapter 'added'" in message
    assert "embed_tokens" in message and "lm_head" in message  # resized embeddings saved with the adapter
    assert "token ids up to" in message  # its tokenizer goes beyond the base vocabulary

    # either sign alone is enough: a plain LoRA beside an added_tokens.json ...
    plain = make_adapter(tiny_decoder_path, tmp_path / "plain")
    (plain / "tokenizer.json").write_bytes((tiny_decoder_path / "tokenizer.json").read_bytes())
    check_adapter_dir(plain, str(tiny_decoder_path))  # the base's own tokenizer saved beside it is fine
    (plain / "added_tokens.json").write_text(json.dumps({"<entity>": 616}))
    with pytest.raises(AdapterCompatibilityError, match=r"adapter 'plain'.*added_tokens\.json"):
        check_adapter_dir(plain, str(tiny_decoder_path), name="plain")
    # ... or beside a tokenizer with more tokens than the base's
    (plain / "added_tokens.json").unlink()
    (plain / "tokenizer.json").write_bytes((out / "tokenizer.json").read_bytes())
    with pytest.raises(AdapterCompatibilityError, match="token ids up to"):
        check_adapter_dir(plain, str(tiny_decoder_path), name="plain")


def test_check_lists_every_problem_at_once(tmp_path, tiny_decoder_path):
    path = make_adapter(tiny_decoder_path, tmp_path / "bad", rank=16, modules_to_save=["lm_head"])
    with pytest.raises(AdapterCompatibilityError) as caught:
        check_adapter_dir(path, str(tmp_path), max_rank=8, name="bad")
    message = str(caught.value)
    assert "base model mismatch" in message and "rank 16" in message and "modules_to_save" in message
