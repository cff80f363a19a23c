"""DSPy on openie engines: any backend, adapter and cache becomes a ``dspy.LM``.

DSPy 3.4 takes a custom engine object (``complete(Request) -> Response``) in ``dspy.LM``;
the model name picks the LoRA adapter: ``openie/base`` is the bare model, ``openie/<name>``
the adapter ``<name>``.

The engine declares structured outputs: a DSPy request's ``response_format`` (a JSON schema, or
``json_object``) becomes the openie request's ``json_schema``, which every backend decodes under
a grammar. DSPy's JSON adapter then gets output that parses by construction, which is what lets
100M-parameter models run DSPy programs at all.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches a cost map otherwise

from openie.engines.base import Engine, GenerationRequest, capabilities  # noqa: E402

MODEL_PREFIX = "openie/"
#: the generation parameters an openie engine honours (what DSPy may send)
SUPPORTED_PARAMS = frozenset({"temperature", "max_tokens", "top_p", "stop", "seed", "response_format"})
ANY_JSON_OBJECT: dict[str, Any] = {"type": "object"}


def response_json_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema a DSPy ``response_format`` asks for (``json_object``: any object; None: free text)."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        return dict(response_format["schema"])
    if kind == "json_object":
        return dict(ANY_JSON_OBJECT)
    raise ValueError(f"unsupported response_format type {kind!r}")


def adapter_from_model(model: str) -> str | None:
    """``openie/base`` -> None, ``openie/ner-en`` -> ``ner-en`` (a bare name is taken as is)."""
    name = model[len(MODEL_PREFIX):] if model.startswith(MODEL_PREFIX) else model
    return None if name in ("", "base") else name


class OpenIEDSPyEngine:
    """Adapts an openie ``Engine`` to DSPy's engine contract (one request, one response)."""

    supports_function_calling = False
    supports_reasoning = False

    def __init__(self, engine: Engine, use_chat_template: bool | None = None, structured: bool = True):
        self.engine = engine
        self.use_chat_template = use_chat_template
        self.structured = structured
        self.requests: list[GenerationRequest] = []  # what DSPy asked, in order, for inspection

    @property
    def supports_response_schema(self) -> bool:
        return self.structured

    @property
    def supported_params(self) -> frozenset[str]:
        return SUPPORTED_PARAMS if self.structured else SUPPORTED_PARAMS - {"response_format"}

    def _has_chat_template(self) -> bool:
        if self.use_chat_template is not None:
            return self.use_chat_template
        tok = capabilities(self.engine).tokenizer
        return bool(getattr(tok, "chat_template", None))

    def complete(self, request: Any) -> Any:
        from dspy.clients.engines.base import validate_request
        from dspy.lm15 import Message, Response, TextPart, Usage

        validate_request(request)
        messages: list[dict[str, str]] = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
        cfg = request.config
        stop = cfg.stop if cfg.stop is not None else ()
        params: dict[str, Any] = {
            "adapter": adapter_from_model(request.model or ""),
            "max_tokens": cfg.max_tokens or 512,
            "temperature": cfg.temperature if cfg.temperature is not None else 0.0,
            "top_p": cfg.top_p if cfg.top_p is not None else 1.0,
            "stop": (stop,) if isinstance(stop, str) else tuple(stop),
            "seed": cfg.seed,
            "json_schema": response_json_schema(cfg.response_format) if self.structured else None,
        }
        if self._has_chat_template():
            req = GenerationRequest(messages=tuple(messages), **params)
        else:  # base models: a plain transcript, ending where the assistant speaks
            transcript = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" if m["role"] != "system"
                                     else m["content"] for m in messages)
            req = GenerationRequest(prompt=transcript + "\n\nAssistant:", **params)
        self.requests.append(req)
        gen = self.engine.generate([req])[0]
        return Response(id=None, model=request.model, message=Message.assistant([TextPart(gen.text)]),
                        finish_reason="length" if gen.finish_reason == "length" else "stop",
                        usage=Usage(input_tokens=gen.prompt_tokens, output_tokens=gen.completion_tokens,
                                    total_tokens=gen.prompt_tokens + gen.completion_tokens))

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


def openie_lm(engine: Engine, adapter: str | None = None, *, max_tokens: int = 512, temperature: float = 0.0,
              use_chat_template: bool | None = None, structured: bool = True, **kwargs: Any) -> Any:
    """A ``dspy.LM`` answering through ``engine`` (wrap it in ``CachedEngine`` for the openie cache).

    DSPy's own cache is off: the openie cache keys on adapter content and template versions.
    ``structured=False`` hides the engine's constrained decoding from DSPy (free-text JSON).
    """
    import dspy

    model = MODEL_PREFIX + (adapter or "base")
    return dspy.LM(model=model, engine=OpenIEDSPyEngine(engine, use_chat_template, structured), cache=False,
                   max_tokens=max_tokens, temperature=temperature, **kwargs)
