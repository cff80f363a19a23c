"""A test double that replays given outputs, for testing the layers above engines.

Like DSPy's DummyLM: real prompts go in, scripted texts come out, so prompt building,
parsing, caching and runners are exercised without a model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from openie.engines.base import EngineCapabilities, EngineError, Generation, GenerationRequest, Score, ScoreRequest


class ScriptedEngine:
    """Answers from a script: a mapping (prompt -> text), a list consumed in order, or a function.

    Scores come from ``scores`` (a function of the request, default: -1 nat per character of
    the continuation). Every request seen is kept in ``calls`` for assertions.
    """

    def __init__(self, outputs: Mapping[str, str] | Sequence[str] | Callable[[GenerationRequest], str],
                 scores: Callable[[ScoreRequest], float] | None = None, model_id: str = "scripted",
                 default: str | None = None):
        self.model_id = model_id
        self._outputs = outputs if isinstance(outputs, Mapping) or callable(outputs) else list(outputs)
        self._scores = scores or (lambda r: -float(len(r.continuation)))
        self._default = default
        self.calls: list[GenerationRequest | ScoreRequest] = []

    def _text_for(self, request: GenerationRequest) -> str:
        if callable(self._outputs):
            return self._outputs(request)
        if isinstance(self._outputs, Mapping):
            key = request.prompt if request.prompt is not None else request.messages[-1]["content"]  # type: ignore[index]
            if key in self._outputs:
                return self._outputs[key]
            if self._default is not None:
                return self._default
            raise EngineError(f"scripted engine has no output for prompt {key[:80]!r}")
        if not self._outputs:
            if self._default is not None:
                return self._default
            raise EngineError("scripted engine ran out of outputs")
        return self._outputs.pop(0)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        out = []
        for r in requests:
            self.calls.append(r)
            text = self._text_for(r)
            finish = "stop"
            for s in r.stop:
                if s in text:
                    text = text[: text.index(s)]
            words = text.split()
            if len(words) > r.max_tokens:
                text, finish = " ".join(words[: r.max_tokens]), "length"
            prompt = r.prompt if r.prompt is not None else " ".join(m["content"] for m in r.messages or ())
            out.append(Generation(text, finish, len(prompt.split()), min(len(words), r.max_tokens)))
        return out

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        out = []
        for r in requests:
            self.calls.append(r)
            lp = float(self._scores(r))
            n = max(1, len(r.continuation.split()))
            out.append(Score(lp, lp / n, n))
        return out

    def adapter_fingerprint(self, name: str | None) -> str:
        return name or ""

    @property
    def capabilities(self) -> EngineCapabilities:
        """A test double takes every kind of request (it replays its script whatever was asked)."""
        return EngineCapabilities(structured_outputs=True, allowed_texts=True, loglikelihood=True, lora=True)

    def close(self) -> None:
        """Nothing to free."""
