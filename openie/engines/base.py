"""The engine contract: batched generation and log-likelihood scoring over one base LLM.

Every backend (transformers + peft, vLLM offline, vLLM server) takes the same requests and
returns the same results, so a method or experiment switches backend by configuration only.
A request names its LoRA adapter; ``None`` means the bare base model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from openie.errors import OpenIEError


class EngineError(OpenIEError, RuntimeError):
    """A backend could not serve a request (it names the request field or the backend fault)."""


class UnsupportedRequestError(EngineError, ValueError):
    """A request asks for something this backend cannot honour."""


@dataclass(frozen=True)
class GenerationRequest:
    """One completion. Exactly one of ``prompt`` and ``messages`` is set.

    ``template`` names the prompt template and version that produced the prompt (the prompt
    layer fills it); it changes no output but keys the cache, so editing a template invalidates it.
    ``allowed_texts`` restricts the completion to tokens of these texts (each word with and without
    a leading space) plus the end tokens: an output that can only copy from its input (BANER).
    """

    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    adapter: str | None = None
    json_schema: dict[str, Any] | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    template: str | None = None
    allowed_texts: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a GenerationRequest needs exactly one of prompt and messages")
        if self.messages is not None:
            object.__setattr__(self, "messages", tuple(dict(m) for m in self.messages))
            for i, m in enumerate(self.messages):
                if set(m) != {"role", "content"}:
                    raise ValueError(f"messages[{i}] must have exactly 'role' and 'content', got {sorted(m)}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.allowed_texts is not None:
            texts = (self.allowed_texts,) if isinstance(self.allowed_texts, str) else tuple(self.allowed_texts)
            if not texts or not all(isinstance(t, str) for t in texts):
                raise ValueError("allowed_texts must be a non-empty sequence of strings")
            if self.json_schema is not None:
                raise ValueError("a request takes allowed_texts or json_schema, not both")
            object.__setattr__(self, "allowed_texts", texts)
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["messages"] = list(self.messages) if self.messages is not None else None
        d["stop"] = list(self.stop)
        if self.allowed_texts is None:
            del d["allowed_texts"]  # keeps the cache keys of every unrestricted request unchanged
        else:
            d["allowed_texts"] = list(self.allowed_texts)
        return d


@dataclass(frozen=True)
class Generation:
    text: str
    finish_reason: str  # "stop" (end token or stop string) | "length"
    prompt_tokens: int
    completion_tokens: int
    cached: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("cached")
        return d


@dataclass(frozen=True)
class ScoreRequest:
    """Log-likelihood of ``continuation`` given ``context`` (the continuation's tokens only)."""

    context: str
    continuation: str
    adapter: str | None = None
    template: str | None = None

    def __post_init__(self) -> None:
        if not self.continuation:
            raise ValueError("a ScoreRequest needs a non-empty continuation")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Score:
    logprob: float       # summed over the continuation's tokens
    mean_logprob: float  # per token
    n_tokens: int
    cached: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"logprob": self.logprob, "mean_logprob": self.mean_logprob, "n_tokens": self.n_tokens}


@dataclass(frozen=True)
class EngineCapabilities:
    """What a backend can serve, declared by it (never probed), so a method can refuse up front.

    ``context_length``: prompt plus answer tokens (``None``: unknown); ``tokenizer``: the tokenizer
    the engine counts and encodes prompts with, where it has one locally (exact prompt budgets).
    """

    context_length: int | None = None
    structured_outputs: bool = False  # GenerationRequest.json_schema is decoded under its grammar
    allowed_texts: bool = False  # GenerationRequest.allowed_texts restricts the completion
    loglikelihood: bool = False  # Engine.loglikelihood scores continuations
    lora: bool = False  # requests may name adapters
    tokenizer: Any = field(default=None, compare=False)


@runtime_checkable
class Engine(Protocol):
    """What every backend provides. ``model_id`` identifies the base weights (it keys caches)."""

    model_id: str

    @property
    def capabilities(self) -> EngineCapabilities: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]: ...

    def adapter_fingerprint(self, name: str | None) -> str:
        """Content hash of an adapter's weights ('' for the base): keys caches across retraining."""
        ...

    def close(self) -> None:
        """Free the model (and stop what the engine started); the engine is not used afterwards."""
        ...


def capabilities(engine: Any) -> EngineCapabilities:
    """An engine's declared capabilities; wrappers (cache, micro-batching) pass their inner engine's
    through. An object that declares none (a user's own engine) gets none: nothing is assumed."""
    declared = getattr(engine, "capabilities", None)
    return declared if isinstance(declared, EngineCapabilities) else EngineCapabilities()


def request_key(engine: Engine, kind: str, request: GenerationRequest | ScoreRequest) -> str:
    """Stable cache key over everything that can change an output."""
    payload = {
        "kind": kind,
        "model": engine.model_id,
        "adapter_fingerprint": engine.adapter_fingerprint(request.adapter),
        "request": request.to_dict(),
    }
    dtype = getattr(engine, "dtype", None)  # the resolved dtype changes outputs (never "auto" here)
    if dtype is not None:
        payload["dtype"] = str(dtype).removeprefix("torch.")
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_content_hash(path: str | Path) -> str:
    """sha256 over an adapter folder's ``adapter_config.json`` and weight file(s).

    Metadata written beside the weights (the registry's ``openie_adapter.json``, READMEs) does not
    count: only what changes the adapter's outputs does.
    """
    path = Path(path)
    config = path / "adapter_config.json"
    if not config.is_file():
        raise EngineError(f"{path} is not a peft adapter folder: no adapter_config.json")
    weights = [path / name for name in ADAPTER_WEIGHT_FILES if (path / name).is_file()]
    if not weights:
        raise EngineError(f"{path} has no adapter weights ({' or '.join(ADAPTER_WEIGHT_FILES)})")
    digest = hashlib.sha256()
    for file in [config, *weights]:
        digest.update(file.name.encode("utf-8") + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def adapter_hash_or_path(path: str | Path) -> str:
    """:func:`adapter_content_hash`, or the path where it cannot be read: for records and fingerprints
    taken before an engine loads the adapter (a missing one fails there, with its own message)."""
    try:
        return adapter_content_hash(path)
    except (EngineError, OSError):
        return str(path)
