"""Any OpenAI-compatible endpoint as an engine: a lab's vLLM or SGLang server, llama.cpp, Ollama, a hosted API.

Why a second server engine next to :mod:`openie.engines.vllm_server`: that one tokenises locally and
speaks vLLM's extensions (token-id prompts, ``prompt_logprobs``, runtime LoRA loading), so it needs
the served model's tokenizer and a vLLM server. This one speaks only the OpenAI API, through the
official ``openai`` client: text prompts to ``/completions``, chat messages to
``/chat/completions``, adapters as served model names. What it cannot know it declares
(:attr:`OpenAIEndpointEngine.capabilities`), so a method that needs more refuses up front.

How it keeps a run honest:

- **Identity.** ``model_id`` is ``<served model>@<base URL>``: the cache key (``request_key``)
  holds both, so two servers never share cached answers. The API key is read from the environment
  variable named by ``api_key_env`` when the engine starts; only the variable's *name* is an
  option, so run records, caches and failure records never hold the key, and error texts are
  scrubbed of it.
- **Structured outputs.** A request's JSON schema goes out as ``response_format: {"type":
  "json_schema", ...}`` where the endpoint honours it, and every answer is validated with
  ``jsonschema`` either way (``stats.schema_invalid``; a complete but invalid answer from an
  endpoint that claims support is warned about: it ignores ``response_format``).
- **Log-likelihoods** come from ``echo`` + ``logprobs`` on ``/completions`` (the prompt's own token
  log-probabilities). With the served model's tokenizer (option ``tokenizer``) the pair is sent as
  token ids split like every other backend splits it; without, as text, the continuation's tokens
  found by their character offsets. An endpoint without prompt log-probabilities raises
  :class:`UnsupportedRequestError`.
- **Capabilities** ``structured_outputs`` and ``loglikelihood`` are declared by the options; left
  at ``None`` they are probed once at start (two tiny requests): a constrained answer only a
  grammar can produce, and prompt log-probabilities.
- **Failures.** Requests run ``concurrency`` at a time behind a client-side ``rate_limit``
  (requests per second); 408/409/429/5xx answers and connection errors are retried ``max_retries``
  times with exponential backoff and jitter (``Retry-After`` honoured). A request that still fails
  is recorded (``failures``; appended to ``failures_path`` as JSONL when given) and the call raises
  :class:`RequestsFailedError` carrying the answers that did come back (a cache stores them), so
  the caller writes nothing for that batch and a re-run retries exactly what failed;
  :meth:`OpenAIEndpointEngine.retry_failures` re-sends a failure record's requests.
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openie.engines.base import (
    EngineCapabilities,
    EngineError,
    Generation,
    GenerationRequest,
    Score,
    ScoreRequest,
    UnsupportedRequestError,
    request_key,
)

#: HTTP statuses that mean "later, please" or "the server is unwell" rather than "bad request": retried.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
#: The longest ``Retry-After`` an endpoint may ask for before a retry (seconds).
MAX_RETRY_AFTER_S = 120.0
#: The probe for structured outputs: only a grammar makes a model answer exactly this.
_PROBE_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"answer": {"enum": ["openie"]}},
                                 "required": ["answer"], "additionalProperties": False}
_NOT_SENT = object()


@dataclass
class EndpointStats:
    """What the engine did on the wire; nothing is retried or dropped without being counted here."""

    requests: int = 0  # requests asked for (generate + loglikelihood)
    succeeded: int = 0
    http_calls: int = 0  # attempts sent, retries included
    retries: int = 0
    retried_429: int = 0
    retried_5xx: int = 0  # and 408 / 409
    retried_connection: int = 0  # connection errors and timeouts
    failed: int = 0  # requests that failed for good (recorded in ``failures``)
    not_sent: int = 0  # requests dropped unsent because another one of their call failed for good
    rate_limit_wait_s: float = 0.0  # time spent waiting for the client-side rate limit
    backoff_wait_s: float = 0.0
    schema_requests: int = 0  # answers checked against a JSON schema
    schema_invalid: int = 0  # ... that failed the check (the parser records them as parse problems)
    unconstrained_schema_requests: int = 0  # schema requests sent without response_format (endpoint lacks it)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"endpoint: {self.succeeded}/{self.requests} requests succeeded, {self.retries} retries "
                f"({self.retried_429} on 429, {self.retried_5xx} on 5xx, {self.retried_connection} on connection), "
                f"{self.failed} failed, {self.not_sent} not sent, {self.schema_invalid}/{self.schema_requests} "
                f"answers outside their JSON schema")


@dataclass(frozen=True)
class FailedRequest:
    """One request that failed for good: enough to retry it (``request``) and to see why."""

    kind: str  # "generate" | "loglikelihood"
    key: str  # its cache key (request_key)
    request: dict[str, Any]
    error: str
    status: int | None = None  # the last HTTP status (None: connection error, or none)
    attempts: int = 0
    index: int = -1  # its position in the call that failed
    time: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestsFailedError(EngineError):
    """Some requests of one call failed for good. ``failures`` says which and why; ``completed``
    holds the call's answers in request order (``None`` where none came back), so a cache can keep
    them; ``not_sent`` requests were dropped because the endpoint looked down."""

    def __init__(self, message: str, failures: Sequence[FailedRequest], completed: Sequence[Any], not_sent: int):
        super().__init__(message)
        self.failures = list(failures)
        self.completed = list(completed)
        self.not_sent = not_sent

    def write(self, path: str | Path) -> Path:
        """The failures as JSONL (one request per line), replacing ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n" for f in self.failures),
                       encoding="utf-8")
        os.replace(tmp, path)
        return path


class _Failure(Exception):
    """A request's final failure inside the engine (turned into a FailedRequest)."""

    def __init__(self, message: str, status: int | None, attempts: int, endpoint_down: bool):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.endpoint_down = endpoint_down  # retries exhausted: the rest of the call is not sent


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONVENTIONAL_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")  # safe to show: not what keys look like


def check_api_key_env(value: Any) -> None:
    """Refuse an ``api_key_env`` that is not an environment variable's name, without showing it:
    a key pasted there by mistake must not reach a message or a run record."""
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise EngineError("api_key_env must be the NAME of an environment variable holding the key (letters, digits, "
                          "_), and the value given is not one: never pass the key itself")


def _request_from_dict(kind: str, d: Mapping[str, Any]) -> GenerationRequest | ScoreRequest:
    if kind == "loglikelihood":
        return ScoreRequest(**d)
    d = dict(d)
    if d.get("messages") is not None:
        d["messages"] = tuple(dict(m) for m in d["messages"])
    d["stop"] = tuple(d.get("stop") or ())
    if d.get("allowed_texts") is not None:
        d["allowed_texts"] = tuple(d["allowed_texts"])
    return GenerationRequest(**d)


class OpenAIEndpointEngine:
    """An :class:`~openie.engines.base.Engine` over an OpenAI-compatible HTTP endpoint.

    ``model`` is the served model name (``None``: the one model the endpoint lists); ``adapters``
    maps adapter names (what requests carry) to served model names (a vLLM server started with
    ``--lora-modules name=path`` serves each LoRA under its name). ``base_url`` is the API root,
    ``/v1`` included (``http://host:8000/v1``). ``api_key_env`` names the environment variable
    holding the key (``None``: no key, for a local server). ``tokenizer`` (path, hub id or default
    model name of the served model's tokenizer, or a tokenizer) gives exact prompt budgets and
    token-id scoring; ``context_length`` defaults to what the endpoint lists (vLLM's
    ``max_model_len``). ``structured_outputs`` / ``loglikelihood``: ``None`` probes the endpoint at
    start. ``dtype`` is accepted because a run passes its dtype to every backend, and ignored: the
    server decides its own.
    """

    def __init__(self, model: str | None = None, adapters: Mapping[str, str] | None = None, *,
                 base_url: str | None = None, api_key_env: str | None = None, concurrency: int = 8,
                 max_retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 rate_limit: float | None = None, timeout: float = 600.0,
                 structured_outputs: bool | None = None, loglikelihood: bool | None = None,
                 tokenizer: Any = None, context_length: int | None = None, failures_path: str | Path | None = None,
                 show_progress: bool = True, dtype: str | None = None):
        if not base_url or not isinstance(base_url, str):
            raise EngineError("the openai backend needs base_url: the endpoint's API root, e.g. "
                              "http://127.0.0.1:8000/v1 (--base-url URL; engine.options.base_url in a config)")
        if not base_url.startswith(("http://", "https://")):
            raise EngineError(f"base_url must be an http(s) URL, got {base_url!r}")
        for name, value, low in (("concurrency", concurrency, 1), ("max_retries", max_retries, 0)):
            if not isinstance(value, int) or value < low:
                raise EngineError(f"{name} must be an integer >= {low}, got {value!r}")
        if rate_limit is not None and not rate_limit > 0:
            raise EngineError(f"rate_limit (requests per second) must be > 0, got {rate_limit!r}")
        if backoff_s < 0 or max_backoff_s < 0 or not timeout > 0:
            raise EngineError("backoff_s and max_backoff_s must be >= 0 and timeout > 0")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.rate_limit = float(rate_limit) if rate_limit is not None else None
        self.timeout = float(timeout)
        self.show_progress = show_progress
        self.failures_path = Path(failures_path) if failures_path is not None else None
        self.stats = EndpointStats()
        self.failures: list[FailedRequest] = []
        self.probes: dict[str, str] = {}  # what the start-up probes found, in words
        self._lock = threading.Lock()
        self._rate_lock = threading.Lock()
        self._next_slot = 0.0
        self._warned: set[str] = set()
        self._closed = False
        self._adapter_models = {str(k): str(v) for k, v in (adapters or {}).items()}
        self._api_key = self._read_key(api_key_env)
        import openai

        self._client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key or "EMPTY", max_retries=0,
                                     timeout=self.timeout)
        self.tokenizer = self._load_tokenizer(tokenizer)
        self._outstanding = self._read_failures()
        try:
            listed = self._list_models()
            self.model = self._pick_model(model, listed)
            self.context_length = context_length if context_length is not None else self._listed_length(listed)
            self.model_id = f"{self.model}@{self.base_url}"
            for name, served in self._adapter_models.items():
                if listed is not None and served not in listed:
                    raise EngineError(f"adapter {name!r} names model {served!r}, which the endpoint at {self.base_url} "
                                      f"does not serve; it serves {sorted(listed)}")
            self._structured = (bool(structured_outputs) if structured_outputs is not None
                                else self._probe_structured_outputs())
            self._loglikelihood = bool(loglikelihood) if loglikelihood is not None else self._probe_loglikelihood()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _read_key(api_key_env: str | None) -> str | None:
        if api_key_env is None:
            return None
        check_api_key_env(api_key_env)
        key = os.environ.get(api_key_env)
        if not key:
            shown = repr(api_key_env) if _CONVENTIONAL_ENV_NAME.match(api_key_env) else "a variable"
            raise EngineError(f"api_key_env names {shown}, but that environment variable is not set (or empty): "
                              f"export it before the run")
        return key

    def _scrub(self, text: str) -> str:
        """``text`` without the API key (an endpoint may echo it, masked or not, in an error)."""
        key = self._api_key
        return text.replace(key, "***") if key and len(key) >= 4 else text

    @staticmethod
    def _load_tokenizer(tokenizer: Any) -> Any:
        if tokenizer is None or not isinstance(tokenizer, str | Path):
            return tokenizer
        from openie.models import load_tokenizer

        try:
            return load_tokenizer(str(tokenizer))
        except Exception as err:
            raise EngineError(f"tokenizer: could not load {str(tokenizer)!r} ({err}); give the served model's "
                              "tokenizer folder, hub id or default model name, or leave it out") from err

    def _list_models(self) -> dict[str, dict[str, Any]] | None:
        """Served models by id (``None``: the endpoint has no ``/models``)."""
        import openai

        try:
            page = self._with_retries(lambda: self._client.models.list(), "listing the served models",
                                      threading.Event())
        except _Failure as err:
            if err.status == 404 and self.base_url.endswith("/v1"):
                return None  # an endpoint without /models: the model must be named
            hint = " (does base_url need /v1 at its end?)" if err.status == 404 else ""
            raise EngineError(f"the endpoint at {self.base_url} could not list its models{hint}: {err}") from None
        except openai.OpenAIError as err:  # an answer the client cannot read
            raise EngineError(f"the endpoint at {self.base_url} answered /models unreadably: {self._scrub(str(err))}") \
                from None
        return {str(m.id): {**(m.model_extra or {}), "id": str(m.id)} for m in page.data}

    def _pick_model(self, model: str | None, listed: dict[str, dict[str, Any]] | None) -> str:
        if listed is None:
            if model is None:
                raise EngineError(f"the endpoint at {self.base_url} lists no models (/models): name one with model=")
            return model
        if model is None:
            bases = [m for m, info in listed.items() if not info.get("parent")]
            if len(bases) != 1:
                raise EngineError(f"the endpoint at {self.base_url} serves {sorted(listed)}: name one with model= "
                                  "(--model NAME)")
            return bases[0]
        if model not in listed:
            raise EngineError(f"the endpoint at {self.base_url} serves no model {model!r}; it serves "
                              f"{sorted(listed)} (--model NAME; engine.model in a config)")
        return model

    def _listed_length(self, listed: dict[str, dict[str, Any]] | None) -> int | None:
        value = (listed or {}).get(self.model, {}).get("max_model_len")
        return int(value) if isinstance(value, int) and value > 0 else None

    def _probe_structured_outputs(self) -> bool:
        rf = {"type": "json_schema", "json_schema": {"name": "probe", "schema": _PROBE_SCHEMA}}
        try:
            out = self._with_retries(lambda: self._client.completions.create(
                model=self.model, prompt="Answer:", max_tokens=32, temperature=0.0,
                extra_body={"response_format": rf}), "probing structured outputs", threading.Event())
        except _Failure as err:
            if err.endpoint_down:
                raise EngineError(f"the endpoint at {self.base_url} did not answer the structured-outputs probe: "
                                  f"{err}") from None
            self.probes["structured_outputs"] = f"no: HTTP {err.status}: {err}"
            return False
        text = (out.choices[0].text or "") if out.choices else ""
        try:
            ok = json.loads(text) == {"answer": "openie"}
        except ValueError:
            ok = False
        self.probes["structured_outputs"] = ("yes: response_format json_schema is honoured" if ok else
                                             f"no: response_format json_schema was ignored (answer {text[:60]!r})")
        return ok

    def _probe_loglikelihood(self) -> bool:
        try:
            out = self._with_retries(lambda: self._client.completions.create(
                model=self.model, prompt="The capital of France is Paris", max_tokens=1, temperature=0.0,
                echo=True, logprobs=0), "probing prompt log-probabilities", threading.Event())
        except _Failure as err:
            if err.endpoint_down:
                raise EngineError(f"the endpoint at {self.base_url} did not answer the log-probability probe: "
                                  f"{err}") from None
            self.probes["loglikelihood"] = f"no: HTTP {err.status}: {err}"
            return False
        try:
            self._prompt_logprobs(out, None)
        except _Failure as err:
            self.probes["loglikelihood"] = f"no: {err}"
            return False
        self.probes["loglikelihood"] = "yes: echo + logprobs return the prompt's log-probabilities"
        return True

    # ------------------------------------------------------------------ the engine protocol

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(context_length=self.context_length, structured_outputs=self._structured,
                                  allowed_texts=False, loglikelihood=self._loglikelihood,
                                  lora=bool(self._adapter_models), tokenizer=self.tokenizer)

    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapter_models)

    def served_name(self, adapter: str | None) -> str:
        """The ``model`` field of a request for ``adapter`` (the base model's name for ``None``)."""
        if adapter is None:
            return self.model
        served = self._adapter_models.get(adapter)
        if served is None:
            raise EngineError(f"unknown adapter {adapter!r}: the openai backend knows adapters "
                              f"{', '.join(self.adapters) or '(none)'} (adapters={{name: served model name}})")
        return served

    def adapter_fingerprint(self, name: str | None) -> str:
        """The adapter's served model name: all an endpoint says about its weights."""
        return "" if name is None else f"served:{self.served_name(name)}"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Every request's answer, in request order (``concurrency`` in flight)."""
        self._check_open()
        calls = [self._generation_call(i, r) for i, r in enumerate(requests)]
        return self._run("generate", requests, calls)

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        """Sum and mean log-probability of each continuation given its context (the server's dtype)."""
        self._check_open()
        if requests and not self._loglikelihood:
            why = self.probes.get("loglikelihood", "declared loglikelihood=false")
            raise UnsupportedRequestError(f"the endpoint at {self.base_url} does not return prompt log-probabilities "
                                          f"({why}): log-likelihood scoring needs a server that answers echo + "
                                          "logprobs on /completions (vLLM does)")
        calls = [self._score_call(i, r) for i, r in enumerate(requests)]
        return self._run("loglikelihood", requests, calls)

    def close(self) -> None:
        """Close the HTTP client (the endpoint is not ours to stop)."""
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
        self._closed = True

    def __enter__(self) -> OpenAIEndpointEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        key = f", key from ${self.api_key_env}" if self.api_key_env else ""
        return f"OpenAIEndpointEngine({getattr(self, 'model', None)!r}, base_url={self.base_url!r}{key})"

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("this OpenAIEndpointEngine is closed; create a new one")

    # ------------------------------------------------------------------ requests

    def _generation_call(self, i: int, r: GenerationRequest) -> Callable[[], Generation]:
        """Checks the request now (so nothing is sent for a batch that cannot be served) and
        returns the call that sends it."""
        if r.allowed_texts is not None:
            raise UnsupportedRequestError(f"request {i}: allowed_texts (decoding restricted to given tokens) is not "
                                          f"part of the OpenAI API: the openai backend cannot serve it (use vllm, "
                                          "vllm-server or hf)")
        model = self._served_for(i, r.adapter)
        validator = self._validator(i, r.json_schema) if r.json_schema is not None else None
        kwargs: dict[str, Any] = {"model": model, "temperature": r.temperature, "top_p": r.top_p}
        if r.stop:
            kwargs["stop"] = list(r.stop)
        if r.seed is not None:
            kwargs["seed"] = r.seed
        response_format = None
        if r.json_schema is not None and self._structured:
            response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": r.json_schema}}

        def call() -> Generation:
            if r.messages is not None:
                extra = {"response_format": response_format} if response_format is not None else {}
                out = self._client.chat.completions.create(messages=list(r.messages),  # type: ignore[arg-type]
                                                           max_completion_tokens=r.max_tokens, **kwargs, **extra)
                choice = out.choices[0] if out.choices else None
                text = (choice.message.content or "") if choice is not None else ""
            else:
                extra_body = {"response_format": response_format} if response_format is not None else None
                out = self._client.completions.create(prompt=r.prompt or "", max_tokens=r.max_tokens,
                                                      extra_body=extra_body, **kwargs)
                choice = out.choices[0] if out.choices else None
                text = (choice.text or "") if choice is not None else ""
            if choice is None:
                raise _Failure(f"request {i}: the endpoint answered with no choices", 200, 1, False)
            finish = choice.finish_reason
            if finish not in ("stop", "length"):
                raise _Failure(f"request {i}: the endpoint ended the answer with finish_reason {finish!r}", 200, 1,
                               False)
            usage = out.usage
            generation = Generation(text=text, finish_reason=finish,
                                    prompt_tokens=int(usage.prompt_tokens) if usage else 0,
                                    completion_tokens=int(usage.completion_tokens) if usage else 0)
            if validator is not None:
                self._check_answer(i, validator, generation, response_format is not None)
            return generation

        return call

    def _served_for(self, i: int, adapter: str | None) -> str:
        try:
            return self.served_name(adapter)
        except EngineError as err:
            raise EngineError(f"request {i}: {err}") from None

    @staticmethod
    def _validator(i: int, schema: dict[str, Any]) -> Any:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        cls = validator_for(schema, default=Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as err:
            where = "/".join(str(p) for p in err.path) or "(root)"
            raise UnsupportedRequestError(f"request {i}: invalid JSON schema at {where}: {err.message}") from err
        return cls(schema)

    def _check_answer(self, i: int, validator: Any, generation: Generation, constrained: bool) -> None:
        try:
            valid = validator.is_valid(json.loads(generation.text))
        except ValueError:
            valid = False
        with self._lock:
            self.stats.schema_requests += 1
            self.stats.unconstrained_schema_requests += not constrained
            self.stats.schema_invalid += not valid
        if valid or generation.finish_reason != "stop":
            return  # an answer cut at max_tokens is incomplete JSON: the parser salvages what it can
        if constrained:
            self._warn_once("ignored", f"request {i}: the endpoint at {self.base_url} returned a complete answer that "
                            "does not match its JSON schema although response_format asked for it: the endpoint may "
                            "ignore response_format (declare structured_outputs=false); answers are validated and "
                            "counted in stats.schema_invalid")
        else:
            self._warn_once("unconstrained", f"the endpoint at {self.base_url} does not constrain decoding to JSON "
                            "schemas: answers outside their schema are counted in stats.schema_invalid and recorded "
                            "as parse problems")

    def _warn_once(self, what: str, message: str) -> None:
        with self._lock:
            if what in self._warned:
                return
            self._warned.add(what)
        warnings.warn(message, RuntimeWarning, stacklevel=4)

    def _score_call(self, i: int, r: ScoreRequest) -> Callable[[], Score]:
        model = self._served_for(i, r.adapter)
        if self.tokenizer is not None:
            from openie.engines.tokenization import split_pair_ids

            ctx, cont = split_pair_ids(self.tokenizer, r.context, r.continuation)
            if not cont:
                raise EngineError(f"score request {i}: the continuation {r.continuation!r} encodes to no tokens")
            prompt: Any = ctx + cont
            n_ctx: int | None = len(ctx)
            boundary = None
        else:
            prompt, n_ctx, boundary = r.context + r.continuation, None, len(r.context)

        def call() -> Score:
            out = self._client.completions.create(model=model, prompt=prompt, max_tokens=1, temperature=0.0,
                                                  echo=True, logprobs=0)
            values = self._prompt_logprobs(out, i)
            if n_ctx is not None:
                picked = values[n_ctx:len(prompt)]
                if len(values) < len(prompt):
                    raise _Failure(f"score request {i}: the endpoint returned {len(values)} prompt log-probabilities "
                                   f"for {len(prompt)} prompt tokens", 200, 1, False)
            else:
                offsets = list(out.choices[0].logprobs.text_offset or [])[:len(values)]
                ends = offsets[1:] + [len(r.context) + len(r.continuation)]
                picked = [v for v, end in zip(values, ends, strict=True) if end > boundary]  # type: ignore[operator]
            if not picked or any(v is None for v in picked):
                raise _Failure(f"score request {i}: the continuation {r.continuation!r} has no scored tokens (an empty "
                               "context on an endpoint without BOS: give the engine a tokenizer)", 200, 1, False)
            total = float(sum(picked))  # type: ignore[arg-type]
            return Score(logprob=total, mean_logprob=total / len(picked), n_tokens=len(picked))

        return call

    def _prompt_logprobs(self, out: Any, i: int | None) -> list[float | None]:
        """The prompt tokens' log-probabilities of an ``echo`` answer (the first is ``None``: nothing before it)."""
        what = f"score request {i}" if i is not None else "the probe"
        choice = out.choices[0] if out.choices else None
        logprobs = getattr(choice, "logprobs", None)
        values = list(getattr(logprobs, "token_logprobs", None) or [])
        n_prompt = int(out.usage.prompt_tokens) if out.usage is not None else 0
        if not n_prompt or len(values) < n_prompt or any(v is None for v in values[1:n_prompt]):
            raise _Failure(f"{what}: the endpoint returned no prompt log-probabilities (echo + logprobs)", 200, 1,
                           False)
        return values[:n_prompt]

    # ------------------------------------------------------------------ retries, rate limit, failures

    def _throttle(self) -> None:
        if self.rate_limit is None:
            return
        with self._rate_lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate_limit
        if slot > now:
            with self._lock:
                self.stats.rate_limit_wait_s += slot - now
            time.sleep(slot - now)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (half to full of the step), at least the endpoint's Retry-After."""
        step = min(self.backoff_s * 2 ** attempt, self.max_backoff_s)
        delay = step * (0.5 + 0.5 * random.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
        return delay

    def _with_retries(self, fn: Callable[[], Any], what: str, stop: threading.Event) -> Any:
        """``fn()`` with retries on 408/409/429/5xx and connection errors; :class:`_Failure` when it gives up."""
        import openai

        last, status = "", None
        for attempt in range(self.max_retries + 1):
            self._throttle()
            with self._lock:
                self.stats.http_calls += 1
            try:
                return fn()
            except _Failure:
                raise
            except openai.APIStatusError as err:
                status = err.status_code
                last = f"HTTP {status}: {self._scrub(_status_message(err))}"
                if status not in RETRYABLE_STATUS:
                    raise _Failure(f"{what}: {last}", status, attempt + 1, False) from None
                counter = "retried_429" if status == 429 else "retried_5xx"
                retry_after = _retry_after(err.response)
            except openai.APIConnectionError as err:  # refused, reset, timed out
                status, counter, retry_after = None, "retried_connection", None
                cause = err.__cause__ or err
                last = self._scrub(f"{type(err).__name__}: {type(cause).__name__}: {cause}".rstrip(": "))
            if attempt == self.max_retries or stop.is_set():
                break
            delay = self._delay(attempt, retry_after)
            with self._lock:
                self.stats.retries += 1
                setattr(self.stats, counter, getattr(self.stats, counter) + 1)
                self.stats.backoff_wait_s += delay
            if stop.wait(delay):  # another request of the call gave up: so does this one
                break
        raise _Failure(f"{what}: the endpoint at {self.base_url} failed {attempt + 1} time(s); last error: {last}",
                       status, attempt + 1, True)

    def _run(self, kind: str, requests: Sequence[Any], calls: Sequence[Callable[[], Any]]) -> list[Any]:
        if not calls:
            return []
        from tqdm.auto import tqdm

        with self._lock:
            self.stats.requests += len(calls)
        stop = threading.Event()  # set when a request exhausted its retries: the endpoint looks down
        results: list[Any] = [None] * len(calls)
        errors: dict[int, _Failure] = {}
        bar = tqdm(total=len(calls), desc=f"openai {kind}", leave=False,
                   disable=not self.show_progress or len(calls) < 16)

        def job(i: int) -> None:
            if stop.is_set():
                results[i] = _NOT_SENT
                errors[i] = _Failure(f"request {i}: not sent: another request of its call failed for good (the "
                                     "endpoint looked down)", None, 0, False)
            else:
                try:
                    results[i] = self._with_retries(calls[i], f"{'score ' if kind == 'loglikelihood' else ''}"
                                                    f"request {i}", stop)
                except _Failure as err:
                    errors[i] = err
                    if err.endpoint_down:
                        stop.set()
                except Exception as err:  # noqa: BLE001 - an answer the client could not read: recorded, not lost
                    errors[i] = _Failure(f"request {i}: {type(err).__name__}: {self._scrub(str(err))}", None, 1, False)
            bar.update(1)

        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(calls)),
                                    thread_name_prefix="openai-endpoint") as pool:
                list(pool.map(job, range(len(calls))))
        finally:
            bar.close()
        not_sent = sum(1 for r in results if r is _NOT_SENT)
        completed = [None if i in errors else r for i, r in enumerate(results)]
        done_keys = [request_key(self, kind, requests[i]) for i, r in enumerate(completed) if r is not None]
        with self._lock:
            self.stats.succeeded += len(done_keys)
            self.stats.failed += len(errors) - not_sent
            self.stats.not_sent += not_sent
            for r in completed:
                if isinstance(r, Generation):
                    self.stats.prompt_tokens += r.prompt_tokens
                    self.stats.completion_tokens += r.completion_tokens
        self._resolve_failures(done_keys)
        if not errors:
            return completed
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        failures = [FailedRequest(kind, request_key(self, kind, requests[i]), requests[i].to_dict(), str(err),
                                  err.status, err.attempts, i, stamp) for i, err in sorted(errors.items())]
        self._record_failures(failures)
        first = next(f for f in failures if f.attempts)
        where = f"; recorded in {self.failures_path}" if self.failures_path is not None else ""
        raise RequestsFailedError(
            f"{len(failures) - not_sent} of {len(calls)} {kind} requests to {self.model} at {self.base_url} failed"
            + (f" and {not_sent} were not sent (the endpoint looked down)" if not_sent else "")
            + f"; first: {first.error}{where}. The answers of this call are not returned (a cache keeps the "
            f"{len(done_keys)} that came back): run again to retry the failed ones", failures, completed, not_sent)

    def _read_failures(self) -> dict[str, FailedRequest]:
        """Outstanding failures of an earlier run (``failures_path``), by key."""
        out: dict[str, FailedRequest] = {}
        if self.failures_path is None or not self.failures_path.is_file():
            return out
        for lineno, line in enumerate(self.failures_path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = FailedRequest(**json.loads(line))
            except (ValueError, TypeError) as err:
                raise EngineError(f"{self.failures_path}, line {lineno} is not a failed-request record ({err}); "
                                  "delete the file to start afresh") from None
            out[item.key] = item
        return out

    def _write_failures(self) -> None:
        assert self.failures_path is not None
        self.failures_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.failures_path.with_name(self.failures_path.name + ".tmp")
        tmp.write_text("".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n" for f in self._outstanding.values()),
                       encoding="utf-8")
        os.replace(tmp, self.failures_path)

    def _record_failures(self, failures: Sequence[FailedRequest]) -> None:
        with self._lock:
            self.failures.extend(failures)
            for f in failures:
                self._outstanding[f.key] = f
            if self.failures_path is not None:
                self._write_failures()

    def _resolve_failures(self, keys: Sequence[str]) -> None:
        """Requests of the failure record that have now succeeded leave it."""
        with self._lock:
            gone = [k for k in keys if k in self._outstanding]
            for k in gone:
                del self._outstanding[k]
            if gone and self.failures_path is not None:
                self._write_failures()

    @property
    def outstanding_failures(self) -> list[FailedRequest]:
        """Failed requests not yet answered (this engine's, and those read from ``failures_path``)."""
        with self._lock:
            return list(self._outstanding.values())

    def retry_failures(self) -> dict[str, Generation | Score]:
        """Send every outstanding failed request again; returns their answers by cache key.

        Succeeded ones leave the record; a request that fails again raises :class:`RequestsFailedError`.
        """
        by_kind: dict[str, list[FailedRequest]] = {}
        for f in self.outstanding_failures:
            by_kind.setdefault(f.kind, []).append(f)
        out: dict[str, Generation | Score] = {}
        for kind, items in sorted(by_kind.items()):
            requests = [_request_from_dict(kind, f.request) for f in items]
            answers = self.generate(requests) if kind == "generate" else self.loglikelihood(requests)  # type: ignore[arg-type]
            out.update({f.key: a for f, a in zip(items, answers, strict=True)})
        return out


def _status_message(err: Any) -> str:
    """The endpoint's own error text (``{"error": {"message": ...}}`` or plain text)."""
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return body["message"]
    response = getattr(err, "response", None)
    text = getattr(response, "text", "") if response is not None else ""
    return (text or str(err)).strip()[:500]


def _retry_after(response: Any) -> float | None:
    """Seconds from a ``Retry-After`` (or ``retry-after-ms``) header, where the endpoint sends one."""
    headers = getattr(response, "headers", None) or {}
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None  # an HTTP date: the backoff decides
    return None


__all__ = ["EndpointStats", "FailedRequest", "OpenAIEndpointEngine", "RETRYABLE_STATUS", "RequestsFailedError",
           "check_api_key_env"]
