"""A folder catalogue of trained LoRA adapters, with the checks vLLM needs before serving one.

Layout: ``root/<name>/`` holds the peft files (``adapter_config.json``, ``adapter_model.safetensors``)
and ``openie_adapter.json``, the metadata below. An adapter registered with ``copy=False`` keeps its
files where they are and ``root/<name>/`` holds only the metadata, which points at them.

The version of an adapter is the content hash of its config and weights (the same hash the engines
use as ``adapter_fingerprint``), so a retrained adapter gets a new version, a new cache key and a new
vLLM name (:meth:`AdapterRegistry.vllm_name`): vLLM keys loaded adapters and its prefix cache by
name and would otherwise serve the stale weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openie.errors import OpenIEError, UnknownNameError

METADATA_FILE = "openie_adapter.json"
ADAPTER_CONFIG = "adapter_config.json"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Parameter names of input embeddings and output heads across architectures.
_EMBEDDING_KEYS = re.compile(r"(^|\.)(embed_tokens|lm_head|wte|embed_out|word_embeddings|shared|output_layer)(\.|$)")
# Files of a training run that are not part of the adapter itself.
_SKIP_ON_COPY = re.compile(r"^(checkpoint-\d+(\.tmp)?|trainer_state\.pt|optimizer\.pt|scheduler\.pt|rng_state.*)$")


class AdapterCompatibilityError(OpenIEError, ValueError):
    """An adapter that the serving engine (vLLM) cannot load; the message lists every problem found."""


@dataclass
class AdapterInfo:
    """Everything known about one registered adapter (what ``openie_adapter.json`` stores)."""

    name: str
    version: str                      # sha256 of adapter_config.json + weights
    path: str                         # folder with the peft files
    base_model: str
    rank: int
    alpha: float
    target_modules: list[str]
    task: str | None = None
    languages: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    @property
    def vllm_name(self) -> str:
        return f"{self.name}-{self.version[:12]}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdapterInfo:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def normalise_model_ref(ref: str | os.PathLike[str]) -> str:
    """A base model reference comparable across spellings: local folders resolve to absolute paths.

    A default model's short name (``gemma-3-270m``) stands for its converted folder.
    """
    from openie.models import DEFAULT_MODELS, converted_model_dir

    text = str(ref).strip()
    default = DEFAULT_MODELS.get(text)
    if default is not None:
        text = str(default.locate() if default.locate is not None else converted_model_dir(text))
    expanded = Path(text).expanduser()
    if expanded.exists():
        return str(expanded.resolve())
    return text.rstrip("/")


def read_adapter_config(path: str | Path) -> dict[str, Any]:
    config = Path(path) / ADAPTER_CONFIG
    if not config.is_file():
        raise AdapterCompatibilityError(f"{path} is not a peft adapter folder: no {ADAPTER_CONFIG}")
    return json.loads(config.read_text(encoding="utf-8"))


def adapter_rank(config: Mapping[str, Any]) -> int:
    """The largest LoRA rank in a peft config (``rank_pattern`` can raise it for some modules)."""
    ranks = [int(config.get("r", 0) or 0), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def weight_names(path: str | Path) -> list[str]:
    """Parameter names saved in an adapter folder (safetensors header read without loading tensors)."""
    path = Path(path)
    safetensors = path / "adapter_model.safetensors"
    if safetensors.is_file():
        with open(safetensors, "rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        return sorted(k for k in header if k != "__metadata__")
    binary = path / "adapter_model.bin"
    if binary.is_file():
        import torch

        return sorted(torch.load(binary, map_location="cpu", weights_only=True))
    raise AdapterCompatibilityError(f"{path} has no adapter weights ({' or '.join(WEIGHT_FILES)})")


def _max_token_id(tokenizer_json: Path) -> int | None:
    try:
        data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    vocab = (data.get("model") or {}).get("vocab")
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab or [])))
    ids += [t["id"] for t in data.get("added_tokens") or [] if isinstance(t, dict) and "id" in t]
    return max(ids) if ids else None


def compatibility_problems(path: str | Path, base_model: str | None = None, max_rank: int | None = None,
                           registered_base: str | None = None) -> list[str]:
    """Why vLLM could not serve the adapter in ``path`` on ``base_model`` (empty: it can)."""
    path = Path(path)
    config = read_adapter_config(path)
    problems = []
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        problems.append(f"it is a {config.get('peft_type')} adapter; vLLM serves LoRA only")
    if base_model is not None:
        wanted = normalise_model_ref(base_model)
        claimed = [("adapter_config.json", config.get("base_model_name_or_path")), ("registry", registered_base)]
        wrong = [f"{ref!r} ({source})" for source, ref in claimed if ref and normalise_model_ref(ref) != wanted]
        if wrong:
            problems.append(f"base model mismatch: trained on {' and '.join(wrong)} but the engine serves "
                            f"{base_model!r}; a LoRA only fits the base it was trained on")
    rank = adapter_rank(config)
    if max_rank is not None and rank > max_rank:
        problems.append(f"LoRA rank {rank} is above the engine's max_lora_rank {max_rank}; raise max_lora_rank "
                        "or retrain with a lower rank")
    if config.get("modules_to_save"):
        problems.append(f"modules_to_save {sorted(config['modules_to_save'])} are full copies of base modules, "
                        "which vLLM cannot load")
    if config.get("use_dora"):
        problems.append("it is a DoRA adapter (use_dora=true), which vLLM cannot load")
    if config.get("trainable_token_indices"):
        problems.append("it trains token embeddings (trainable_token_indices), which vLLM cannot load")
    embedding = [k for k in weight_names(path) if _EMBEDDING_KEYS.search(k)]
    if embedding:
        shown = ", ".join(embedding[:3]) + (", ..." if len(embedding) > 3 else "")
        problems.append(f"it saves embedding / output-head weights ({shown}), i.e. added tokens or resized "
                        "embeddings, which vLLM cannot load")
    added = path / "added_tokens.json"
    if added.is_file() and json.loads(added.read_text(encoding="utf-8") or "{}"):
        problems.append("it ships added tokens (added_tokens.json); vLLM serves the base tokenizer only")
    elif (path / "tokenizer.json").is_file() and base_model is not None:
        base_tok = Path(normalise_model_ref(base_model)) / "tokenizer.json"
        mine, base = _max_token_id(path / "tokenizer.json"), _max_token_id(base_tok) if base_tok.is_file() else None
        if mine is not None and base is not None and mine > base:
            problems.append(f"its tokenizer has token ids up to {mine} but the base's stop at {base} (added "
                            "tokens); vLLM serves the base tokenizer only")
    return problems


def check_adapter_dir(path: str | Path, base_model: str | None = None, max_rank: int | None = None,
                      name: str | None = None, registered_base: str | None = None) -> None:
    """Raise :class:`AdapterCompatibilityError` naming the adapter and every problem found."""
    problems = compatibility_problems(path, base_model, max_rank, registered_base)
    if problems:
        label = f"adapter {name!r} ({path})" if name else f"adapter {path}"
        raise AdapterCompatibilityError(f"vLLM cannot load {label}: " + "; ".join(problems))


class AdapterRegistry:
    """The adapters under ``root``; names are folder names (letters, digits, ``.``, ``_``, ``-``)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _folder(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / METADATA_FILE).is_file())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self._folder(name) / METADATA_FILE).is_file()

    def register(self, path: str | Path, name: str, base_model: str | None = None, *, task: str | None = None,
                 languages: Iterable[str] = (), labels: Iterable[str] = (),
                 training: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                 copy: bool = True, overwrite: bool = False) -> AdapterInfo:
        """Catalogue the peft folder ``path`` as ``name``.

        ``base_model`` defaults to the adapter config's ``base_model_name_or_path``. With ``copy``
        the adapter files (not training checkpoints) are copied into the registry, so later
        retraining in ``path`` cannot change a registered version behind its back.
        """
        from openie.engines.base import adapter_content_hash

        if not _NAME.match(name):
            raise ValueError(f"adapter name {name!r} must match {_NAME.pattern} (it becomes a folder name)")
        source = Path(path)
        config = read_adapter_config(source)
        base = base_model or config.get("base_model_name_or_path")
        if not base:
            raise ValueError(f"adapter {name!r}: give base_model (its adapter_config.json names none)")
        target = self._folder(name)
        if name in self and not overwrite:
            raise FileExistsError(f"adapter {name!r} is already registered in {self.root}; pass overwrite=True "
                                  "to replace it (its new version gets a new vllm_name)")
        in_place = target.exists() and source.resolve() == target.resolve()
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            if copy and not in_place:
                for item in source.iterdir():
                    if _SKIP_ON_COPY.match(item.name) or item.name == METADATA_FILE:
                        continue
                    if item.is_dir():
                        shutil.copytree(item, staging / item.name)
                    else:
                        shutil.copy2(item, staging / item.name)
                files = staging
            else:
                files = source
            info = AdapterInfo(
                name=name, version=adapter_content_hash(files), path="", base_model=str(base),
                rank=adapter_rank(config), alpha=float(config.get("lora_alpha", 0) or 0),
                target_modules=_as_list(config.get("target_modules")), task=task, languages=list(languages),
                labels=list(labels), training=dict(training or {}), metrics=dict(metrics or {}),
                created=datetime.now(UTC).isoformat(timespec="seconds"))
            if in_place:
                info.path = str(target.resolve())
                self._write(target, info)
                shutil.rmtree(staging)
                return info
            info.path = str(target.resolve()) if copy else str(source.resolve())
            self._write(staging, info)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return info

    @staticmethod
    def _write(folder: Path, info: AdapterInfo) -> None:
        tmp = folder / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(info.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(folder / METADATA_FILE)

    def get(self, name: str) -> AdapterInfo:
        if name not in self:
            raise UnknownNameError("adapter", name, self.names())
        data = json.loads((self._folder(name) / METADATA_FILE).read_text(encoding="utf-8"))
        info = AdapterInfo.from_dict(data)
        if not Path(info.path).is_absolute():  # a registry moved as a whole keeps working
            info.path = str((self._folder(name) / info.path).resolve())
        return info

    def list(self) -> list[AdapterInfo]:
        return [self.get(name) for name in self.names()]

    def remove(self, name: str) -> None:
        """Forget ``name``; files registered with ``copy=False`` stay where they are."""
        if name not in self:
            raise UnknownNameError("adapter", name, self.names())
        shutil.rmtree(self._folder(name))

    def check(self, name: str, base_model: str, max_rank: int | None = None) -> AdapterInfo:
        """The adapter's info if vLLM can serve it on ``base_model``; else AdapterCompatibilityError."""
        info = self.get(name)
        check_adapter_dir(info.path, base_model, max_rank, name=name, registered_base=info.base_model)
        return info

    def vllm_name(self, name: str) -> str:
        """The name to serve ``name`` under in vLLM: the name plus its content hash, new per version."""
        return self.get(name).vllm_name


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # peft allows a regex string
        return [value]
    return sorted(value)
