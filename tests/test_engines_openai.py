"""The OpenAI-compatible endpoint engine, through the official ``openai`` client.

Two kinds of endpoint: a real vLLM OpenAI server on the tiny random Qwen2 (one per module, started
like the server tests start theirs; a LoRA served as the model name ``ner``), reached directly and
through a small local HTTP proxy that injects 429s and kills the server mid-run; and, for what a
vLLM server never does (no prompt log-probabilities, a schema ignored, 401s, 503 storms), a tiny
stdlib endpoint that answers from a script. Transformers + peft on the same ids and the offline
vLLM engine are the references.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from openie.cli import app
from openie.engines import check_engine_options, create_engine, vllm_available
from openie.engines.base import Engine, EngineError, GenerationRequest, ScoreRequest, UnsupportedRequestError
from openie.engines.cache import CachedEngine
from openie.engines.openai_endpoint import OpenAIEndpointEngine, RequestsFailedError
from openie.records import Record, read_jsonl, write_jsonl
from openie.testing import build_random_lora, reference_greedy, reference_logprob

PROMPTS = ["Marie Curie was born in", "The capital of France is", "Alice Johnson works for",
           "An event has a trigger", "Researchers compare methods on", "The quick brown fox"]
SCHEMA = {
    "type": "object",
    "properties": {"type": {"enum": ["person", "location", "organization"]},
                   "text": {"type": "string", "maxLength": 12}},
    "required": ["type", "text"],
    "additionalProperties": False,
}
SECRET = "sk-openie-test-0123456789-SECRET"
KEY_ENV = "OPENIE_TEST_ENDPOINT_KEY"
SENTENCES = ["Ada met Grace in Paris today", "Bob visited Rome", "Alan saw London and Paris",
             "Grace and Ada visited London", "Rome today", "Paris with Bob", "Alan met Ada", "London"]

runner = CliRunner()


# ====================================================================================== a scripted endpoint


class _Scripted(BaseHTTPRequestHandler):
    """An OpenAI-shaped endpoint without prompt log-probabilities or structured outputs.

    ``rules(path, body)`` may return ``(status, payload, headers)`` to answer a POST instead of the
    default (a completion whose text is ``"re: " + prompt``); every POST is logged in ``seen``.
    """

    rules: Callable[[str, dict], tuple[int, dict, dict] | None] = staticmethod(lambda path, body: None)
    seen: list[tuple[float, str, dict, str | None]] = []

    def log_message(self, *args):
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "me",
                                                     "created": 0}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        type(self).seen.append((time.monotonic(), self.path, body, self.headers.get("Authorization")))
        ruled = type(self).rules(self.path, body)
        if ruled is not None:
            self._send(*ruled)
            return
        usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        if self.path.endswith("/chat/completions"):
            text = "re: " + body["messages"][-1]["content"]
            self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": text}}], "usage": usage})
            return
        text = "re: " + str(body.get("prompt"))  # echo + logprobs: answered, but without log-probabilities
        self._send(200, {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                         "choices": [{"index": 0, "finish_reason": "stop", "text": text, "logprobs": None}],
                         "usage": usage})


@pytest.fixture
def scripted():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Scripted)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Scripted.rules, _Scripted.seen = staticmethod(lambda path, body: None), []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


# ====================================================================================== options


def test_options_are_checked_and_name_the_field(monkeypatch, tmp_path):
    with pytest.raises(EngineError, match="needs base_url"):
        OpenAIEndpointEngine("m")
    with pytest.raises(EngineError, match="base_url must be an http"):
        OpenAIEndpointEngine("m", base_url="localhost:8000")
    with pytest.raises(EngineError, match="concurrency must be an integer >= 1"):
        OpenAIEndpointEngine("m", base_url="http://127.0.0.1:9/v1", concurrency=0)
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(EngineError, match=f"api_key_env names '{KEY_ENV}', but that environment variable is not set"):
        OpenAIEndpointEngine("m", base_url="http://127.0.0.1:9/v1", api_key_env=KEY_ENV)
    for pasted in (f"{KEY_ENV}={SECRET}", SECRET):  # the key itself, by mistake: refused, never shown
        with pytest.raises(EngineError, match="api_key_env must be the NAME") as info:
            OpenAIEndpointEngine("m", base_url="http://127.0.0.1:9/v1", api_key_env=pasted)
        assert SECRET not in str(info.value)
        with pytest.raises(EngineError, match="never pass the key itself") as info:
            check_engine_options("openai", {"api_key_env": pasted})
        assert SECRET not in str(info.value)
    out = runner.invoke(app, ["extract", "x.jsonl", str(tmp_path / "o.jsonl"), "--labels", "person", "--backend",
                              "openai", "--base-url", "http://127.0.0.1:9/v1", "--engine-option", f"api_key_env={SECRET}"])
    assert out.exit_code == 2 and SECRET not in out.output and not (tmp_path / "o.jsonl.run.json").exists()
    with pytest.raises(EngineError, match="api_key=...: never pass the key itself"):
        check_engine_options("openai", {"api_key": SECRET})
    with pytest.raises(EngineError, match="did you mean 'rate_limit'"):
        check_engine_options("openai", {"ratelimit": 2})
    check_engine_options("openai", {"base_url": "http://x/v1", "api_key_env": KEY_ENV, "concurrency": 4,
                                    "max_retries": 2, "rate_limit": 5.0, "timeout": 30.0})
    out = runner.invoke(app, ["extract", "x.jsonl", str(tmp_path / "o.jsonl"), "--labels", "person",
                              "--backend", "vllm", "--base-url", "http://127.0.0.1:9/v1"])
    assert out.exit_code == 2 and "--base-url applies to --backend openai" in out.output
    out = runner.invoke(app, ["extract", "x.jsonl", str(tmp_path / "o.jsonl"), "--labels", "person",
                              "--backend", "openai"])
    assert out.exit_code == 2 and "--backend openai needs --base-url" in out.output
    assert not (tmp_path / "o.jsonl").exists()


def test_experiment_configs_check_the_openai_engine(tmp_path):
    from openie.experiments.grid import load_config
    from openie.typed_config import ConfigError

    def config(engine: str) -> Path:
        path = tmp_path / "exp.yaml"
        path.write_text("name: endpoint\ndataset: wnut16\nsplit: train\nsample: 4\nmethod:\n  template: ner.json.v1\n"
                        f"engine:\n  backend: openai\n  model: tiny\n{engine}", encoding="utf-8")
        return path

    with pytest.raises(ConfigError, match="engine.options.base_url.*needs the endpoint's API root"):
        load_config(config("  options: {api_key_env: KEY}\n"))
    with pytest.raises(ConfigError, match="engine.options.api_key.*never put the key in a config"):
        load_config(config(f"  options: {{base_url: 'http://x/v1', api_key: {SECRET}}}\n"))
    with pytest.raises(ConfigError, match="engine.options.api_key_env: api_key_env must be the NAME") as info:
        load_config(config(f"  options: {{base_url: 'http://x/v1', api_key_env: {SECRET}}}\n"))
    assert SECRET not in str(info.value)
    with pytest.raises(ConfigError, match="engine.adapters: an endpoint serves its adapters as model names"):
        load_config(config("  options: {base_url: 'http://x/v1'}\n  adapters: {ner: /tmp}\n"))
    [cell] = load_config(config("  options: {base_url: 'http://x/v1', api_key_env: KEY, rate_limit: 2}\n"))
    assert cell.config.engine.options == {"base_url": "http://x/v1", "api_key_env": "KEY", "rate_limit": 2}


def test_an_unreachable_endpoint_is_a_clear_error():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EngineError, match=rf"127.0.0.1:{port}/v1 could not list its models: .*failed 2 time\(s\); "
                                          r"last error: APIConnectionError"):
        OpenAIEndpointEngine("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, backoff_s=0.01)


# ====================================================================================== scripted endpoint


def test_capabilities_are_probed_and_missing_ones_refused(scripted):
    eng = create_engine("openai", "m", base_url=scripted, show_progress=False)
    caps = eng.capabilities
    assert (caps.structured_outputs, caps.loglikelihood, caps.allowed_texts, caps.lora) == (False, False, False, False)
    assert eng.probes["structured_outputs"].startswith("no: response_format json_schema was ignored")
    assert eng.probes["loglikelihood"].startswith("no:")
    assert eng.model_id == f"m@{scripted}"
    with pytest.raises(UnsupportedRequestError, match="does not return prompt log-probabilities"):
        eng.loglikelihood([ScoreRequest("a", " b")])
    with pytest.raises(UnsupportedRequestError, match="request 1: allowed_texts .* is not part of the OpenAI API"):
        eng.generate([GenerationRequest(prompt="x"), GenerationRequest(prompt="y", allowed_texts=("y",))])
    with pytest.raises(UnsupportedRequestError, match="request 0: invalid JSON schema"):
        eng.generate([GenerationRequest(prompt="x", json_schema={"type": "nope"})])
    _Scripted.seen.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = eng.generate([GenerationRequest(prompt="x", json_schema=SCHEMA),
                            GenerationRequest(messages=({"role": "user", "content": "hi"},), json_schema=SCHEMA)])
    assert [g.text for g in out] == ["re: x", "re: hi"]  # unconstrained (no response_format sent), validated
    assert all("response_format" not in body for _, _, body, _ in _Scripted.seen)
    [chat] = [body for _, path, body, _ in _Scripted.seen if path.endswith("/chat/completions")]
    assert chat["max_completion_tokens"] == 256 and chat["messages"] == [{"role": "user", "content": "hi"}]
    assert (eng.stats.schema_requests, eng.stats.schema_invalid, eng.stats.unconstrained_schema_requests) == (2, 2, 2)
    assert any("does not constrain decoding to JSON schemas" in str(w.message) for w in caught)
    with pytest.raises(EngineError, match="serves no model 'other'; it serves \\['m'\\]"):
        OpenAIEndpointEngine("other", base_url=scripted)
    with pytest.raises(EngineError, match="adapter 'ner' names model 'ner-lora', which the endpoint .* does not serve"):
        OpenAIEndpointEngine("m", {"ner": "ner-lora"}, base_url=scripted)
    declared = OpenAIEndpointEngine(None, base_url=scripted, structured_outputs=True, loglikelihood=False)
    assert declared.model == "m" and declared.capabilities.structured_outputs and declared.probes == {}
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng.generate([GenerationRequest(prompt="x")])


def test_retries_with_backoff_jitter_retry_after_and_a_rate_limit(scripted):
    eng = OpenAIEndpointEngine("m", base_url=scripted, structured_outputs=False, loglikelihood=False,
                               backoff_s=0.1, max_retries=3, show_progress=False)
    script = [(503, {"error": {"message": "busy"}}, {}), (429, {"error": {"message": "slow down"}}, {"Retry-After": "0.5"})]
    _Scripted.rules = staticmethod(lambda path, body: script.pop(0) if script else None)
    _Scripted.seen.clear()
    [g] = eng.generate([GenerationRequest(prompt="hello")])
    assert g.text == "re: hello"
    times = [t for t, *_ in _Scripted.seen]
    assert len(times) == 3
    assert 0.05 - 0.01 <= times[1] - times[0] < 0.5  # 0.1 s step, jittered into [0.05, 0.1]
    assert times[2] - times[1] >= 0.5 - 0.01  # Retry-After wins over the 0.2 s step
    s = eng.stats
    assert (s.retries, s.retried_5xx, s.retried_429, s.failed, s.succeeded) == (2, 1, 1, 0, 1)

    _Scripted.rules = staticmethod(lambda path, body: (400, {"error": {"message": "bad prompt"}}, {}))
    with pytest.raises(RequestsFailedError, match="request 0: HTTP 400: bad prompt"):
        eng.generate([GenerationRequest(prompt="x")])
    assert eng.stats.retries == 2  # a bad request is not retried

    limited = OpenAIEndpointEngine("m", base_url=scripted, structured_outputs=False, loglikelihood=False,
                                   rate_limit=10.0, concurrency=6, show_progress=False)
    _Scripted.rules, _Scripted.seen = staticmethod(lambda path, body: None), []
    limited.generate([GenerationRequest(prompt=str(i)) for i in range(6)])
    sent = sorted(t for t, *_ in _Scripted.seen)
    assert sent[-1] - sent[0] >= 0.5 - 0.02  # 6 requests at 10/s: 5 gaps of 0.1 s, whatever the concurrency
    assert limited.stats.rate_limit_wait_s > 0


def test_failed_requests_are_recorded_kept_apart_and_retried(scripted, tmp_path):
    failures = tmp_path / "failed.jsonl"
    eng = OpenAIEndpointEngine("m", base_url=scripted, structured_outputs=False, loglikelihood=False,
                               failures_path=failures, max_retries=1, backoff_s=0.01, show_progress=False)
    cached = CachedEngine(eng, tmp_path / "cache.sqlite")
    broken = {"p2"}
    _Scripted.rules = staticmethod(lambda path, body: (400, {"error": {"message": "no"}}, {})
                                   if body.get("prompt") in broken else None)
    requests = [GenerationRequest(prompt=f"p{i}") for i in range(4)]
    with pytest.raises(RequestsFailedError) as info:
        cached.generate(requests)
    err = info.value
    assert [f.index for f in err.failures] == [2] and err.not_sent == 0
    assert [g.text if g else None for g in err.completed] == ["re: p0", "re: p1", None, "re: p3"]
    assert f"recorded in {failures}" in str(err) and "run again to retry" in str(err)
    [line] = failures.read_text().splitlines()
    record = json.loads(line)
    assert record["request"]["prompt"] == "p2" and record["status"] == 400 and record["kind"] == "generate"
    assert eng.stats.failed == 1 and eng.stats.succeeded == 3

    broken.clear()  # the endpoint recovers: the cache kept the three answers, only the failed one goes out
    _Scripted.seen.clear()
    out = cached.generate(requests)
    assert [g.text for g in out] == [f"re: p{i}" for i in range(4)]
    assert [body["prompt"] for _, _, body, _ in _Scripted.seen] == ["p2"]
    assert [g.cached for g in out] == [True, True, False, True]
    assert failures.read_text() == ""  # answered: off the record

    # an endpoint that is down: one request exhausts its retries, the rest of the call is not sent
    _Scripted.rules = staticmethod(lambda path, body: (503, {"error": {"message": "down"}}, {}))
    down = OpenAIEndpointEngine("m", base_url=scripted, structured_outputs=False, loglikelihood=False,
                                failures_path=failures, max_retries=1, backoff_s=0.2, concurrency=1,
                                show_progress=False)
    with pytest.raises(RequestsFailedError, match=r"1 of 5 generate requests .* failed and 4 were not sent"):
        down.generate([GenerationRequest(prompt=f"q{i}") for i in range(5)])
    assert (down.stats.failed, down.stats.not_sent, down.stats.retried_5xx) == (1, 4, 1)
    assert len(failures.read_text().splitlines()) == 5  # every request of the call is on the record
    _Scripted.rules = staticmethod(lambda path, body: None)
    again = OpenAIEndpointEngine("m", base_url=scripted, structured_outputs=False, loglikelihood=False,
                                 failures_path=failures, show_progress=False)  # a re-run reads the record
    assert len(again.outstanding_failures) == 5
    answers = again.retry_failures()
    assert sorted(g.text for g in answers.values()) == [f"re: q{i}" for i in range(5)]
    assert again.outstanding_failures == [] and failures.read_text() == ""


def test_the_api_key_is_sent_but_never_recorded(scripted, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    failures = tmp_path / "failed.jsonl"
    eng = OpenAIEndpointEngine("m", base_url=scripted, api_key_env=KEY_ENV, structured_outputs=False,
                               loglikelihood=False, failures_path=failures, show_progress=False)
    cached = CachedEngine(eng, tmp_path / "cache.sqlite")
    cached.generate([GenerationRequest(prompt="fine")])
    assert {auth for *_, auth in _Scripted.seen} == {f"Bearer {SECRET}"}
    _Scripted.rules = staticmethod(lambda path, body: (401, {"error": {"message": f"Incorrect API key: {SECRET}"}}, {}))
    with pytest.raises(RequestsFailedError) as info:
        cached.generate([GenerationRequest(prompt="denied")])
    assert "Incorrect API key: ***" in str(info.value) and eng.stats.retries == 0  # 401: not retried
    seen = [str(info.value), repr(eng), repr(cached), str(eng.stats), json.dumps(eng.probes),
            *(json.dumps(f.to_dict()) for f in eng.failures)]
    assert not any(SECRET in text for text in seen)
    assert "key from $" + KEY_ENV in repr(eng)
    cached.close()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_methods_refuse_an_endpoint_that_cannot_serve_them(scripted, tmp_path):
    """BANER needs restricted decoding, EL4NER log-likelihoods (typing, verification) and structured
    outputs for its constrained span answers: both refuse before sending anything."""
    from openie.experiments.extract import ExtractError, extract_file
    from openie.methods.baner.pipeline import BANERExtractor, BoundaryError
    from openie.methods.el4ner.pipeline import EL4NERConfig, EL4NERError, EL4NERExtractor, Member
    from openie.schema import Schema

    schema = Schema.from_labels(["person", "location"])
    eng = OpenAIEndpointEngine("m", base_url=scripted, show_progress=False)  # probed: neither capability
    with pytest.raises(BoundaryError, match="method option constrained: BANER restricts decoding"):
        BANERExtractor(eng, schema)
    BANERExtractor(eng, schema, constrained=False)  # unconstrained markers: any engine
    member = [Member("m", eng)]
    with pytest.raises(EL4NERError, match="verify: EL4NER verifies each span by log-likelihood, and member 'm'"):
        EL4NERExtractor(member, schema, config=EL4NERConfig(demonstrations="none"))
    with pytest.raises(EL4NERError, match="typing: EL4NER types spans by log-likelihood"):
        EL4NERExtractor(member, schema, config=EL4NERConfig(demonstrations="none", verify=False))
    scoring = OpenAIEndpointEngine("m", base_url=scripted, loglikelihood=True, show_progress=False)
    with pytest.raises(EL4NERError, match="constrained: span answers are decoded under a JSON schema"):
        EL4NERExtractor([Member("m", scoring)], schema, config=EL4NERConfig(demonstrations="none"))
    EL4NERExtractor([Member("m", scoring)], schema, config=EL4NERConfig(demonstrations="none", constrained=False))

    data = tmp_path / "in.jsonl"
    write_jsonl([Record("r0", "Ada met Bob")], data)
    _Scripted.seen.clear()
    with pytest.raises(ExtractError, match="BANER restricts decoding"):
        extract_file(data, tmp_path / "out.jsonl", method="baner", backend="openai", model="m", schema=schema,
                     engine_options={"base_url": scripted, "structured_outputs": False, "loglikelihood": False},
                     show_progress=False)
    assert _Scripted.seen == [] and (tmp_path / "out.jsonl").read_text() == ""


# ====================================================================================== a real vLLM server


@pytest.fixture(scope="module")
def lora_path(tiny_decoder_path, tmp_path_factory) -> Path:
    return build_random_lora(tiny_decoder_path, tmp_path_factory.mktemp("openai-lora") / "ner", seed=1)


@pytest.fixture(scope="module")
def server(tiny_decoder_path, lora_path):
    """A vLLM OpenAI server (as the server tests start one) serving ``tiny`` and the LoRA ``ner``."""
    if not vllm_available():
        pytest.skip("vLLM is not installed")
    from openie.engines.vllm_server import VLLMServer

    srv = VLLMServer(tiny_decoder_path, served_model_name="tiny", dtype="float32", max_model_len=512, max_loras=1,
                     max_lora_rank=8, kv_cache_memory_bytes=64 * 2**20, omp_num_threads=1, startup_timeout_s=400,
                     extra_args=["--lora-modules", f"ner={lora_path}"])
    started = time.monotonic()
    srv.start()
    print(f"vLLM server ready in {time.monotonic() - started:.1f} s (log: {srv.log_path})")
    yield srv
    srv.stop()


class Proxy:
    """A real HTTP hop in front of the server: forwards everything, answers the next ``reject``
    POSTs with 429 (``Retry-After: 0``), and calls ``kill`` on its ``kill_at``-th POST (then drops
    connections while the server is gone, as a dying server does)."""

    def __init__(self, upstream: Callable[[], str]):
        self.upstream = upstream
        self.reject = 0
        self.kill: Callable[[], None] | None = None
        self.kill_at = 0
        self.posts = 0
        self.rejected = 0
        self.auth: set[str | None] = set()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._forward("GET", None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with proxy.lock:
                    proxy.posts += 1
                    proxy.auth.add(self.headers.get("Authorization"))
                    reject = proxy.reject > 0
                    proxy.reject -= reject
                    proxy.rejected += reject
                    kill = proxy.kill if proxy.kill is not None and proxy.posts >= proxy.kill_at else None
                    if kill is not None:
                        proxy.kill = None
                if reject:
                    data = b'{"error": {"message": "rate limited by the test proxy", "code": 429}}'
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if kill is not None:
                    kill()
                self._forward("POST", body)

            def _forward(self, method: str, body: bytes | None) -> None:
                try:
                    r = httpx.request(method, proxy.upstream() + self.path, content=body, timeout=120,
                                      headers={"Content-Type": self.headers.get("Content-Type", "application/json")})
                except httpx.TransportError:
                    self.close_connection = True  # the server is gone: drop the connection unanswered
                    return
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def proxy(server):
    p = Proxy(lambda: server.url)
    yield p
    p.close()


@pytest.fixture(scope="module")
def endpoint(server, tiny_decoder_path):
    eng = OpenAIEndpointEngine("tiny", {"ner": "ner"}, base_url=f"{server.url}/v1", tokenizer=str(tiny_decoder_path),
                               show_progress=False)
    yield eng
    eng.close()


def test_completions_and_chat_match_transformers_greedy(endpoint, hf_model):
    from openie.engines.tokenization import prompt_ids, render_prompt

    assert isinstance(endpoint, Engine)
    caps = endpoint.capabilities
    assert (caps.structured_outputs, caps.loglikelihood, caps.lora, caps.allowed_texts) == (True, True, True, False)
    assert caps.context_length == 512 and caps.tokenizer is endpoint.tokenizer
    requests = [GenerationRequest(prompt=p, max_tokens=12) for p in PROMPTS]
    chat = GenerationRequest(messages=({"role": "user", "content": "Name a city."},), max_tokens=12)
    out = endpoint.generate([*requests, chat])
    assert out == endpoint.generate([*requests, chat])  # greedy is deterministic
    for request, generation in zip([*requests, chat], out, strict=True):
        ids = prompt_ids(endpoint.tokenizer, render_prompt(endpoint.tokenizer, request))
        assert generation.prompt_tokens == len(ids)  # the server read exactly the local ids
        assert generation.text == reference_greedy(hf_model, endpoint.tokenizer, ids, 12)
        assert generation.finish_reason in ("stop", "length") and 1 <= generation.completion_tokens <= 12
    stopped = endpoint.generate([GenerationRequest(prompt=PROMPTS[1], max_tokens=24, stop=(out[1].text[1:3],))])[0]
    assert stopped.finish_reason == "stop" and stopped.text == out[1].text[:out[1].text.index(out[1].text[1:3])]
    seeded = GenerationRequest(prompt=PROMPTS[0], max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    first, second = endpoint.generate([seeded, seeded])
    assert first == second


def test_structured_outputs_through_response_format(endpoint):
    import jsonschema

    assert endpoint.probes["structured_outputs"].startswith("yes")
    before = endpoint.stats.schema_requests
    requests = [GenerationRequest(prompt=p, json_schema=SCHEMA, max_tokens=64) for p in PROMPTS[:3]]
    requests.append(GenerationRequest(messages=({"role": "user", "content": "Who?"},), json_schema=SCHEMA,
                                      max_tokens=64))
    for generation in endpoint.generate(requests):
        assert generation.finish_reason == "stop", generation
        jsonschema.validate(json.loads(generation.text), SCHEMA)
    assert endpoint.stats.schema_requests - before == 4
    assert endpoint.stats.schema_invalid == 0 and endpoint.stats.unconstrained_schema_requests == 0


PAIRS = [("Marie Curie was born in", " Warsaw"), ("The capital of France is", " Paris, a city."),
         ("Alice Johnson works for", " Acme Corporation in London")]


def test_loglikelihood_from_echoed_prompt_logprobs(endpoint, server, hf_model, tiny_decoder_path):
    from openie.engines.tokenization import split_pair_ids

    scores = endpoint.loglikelihood([ScoreRequest(c, x) for c, x in [*PAIRS, ("", "Berlin is big")]])
    for (context, continuation), score in zip([*PAIRS, ("", "Berlin is big")], scores, strict=True):
        ctx, cont = split_pair_ids(endpoint.tokenizer, context, continuation)
        assert score.n_tokens == len(cont)
        assert score.logprob == pytest.approx(reference_logprob(hf_model, ctx, cont), abs=1e-3)
    # without a tokenizer: text prompts, continuation tokens found by their character offsets
    plain = OpenAIEndpointEngine("tiny", base_url=f"{server.url}/v1", show_progress=False)
    assert plain.capabilities.loglikelihood and plain.capabilities.tokenizer is None
    by_text = plain.loglikelihood([ScoreRequest(c, x) for c, x in PAIRS])
    for by_ids, text_score in zip(scores[:len(PAIRS)], by_text, strict=True):  # seams on token boundaries: the same tokens
        assert text_score.n_tokens == by_ids.n_tokens
        assert text_score.logprob == pytest.approx(by_ids.logprob, abs=1e-4)
    plain.close()


def test_adapters_are_model_names(endpoint, lora_path, tiny_decoder_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from openie.engines.tokenization import prompt_ids

    requests = [GenerationRequest(prompt=p, max_tokens=10, adapter=a) for p in PROMPTS[:3] for a in (None, "ner")]
    out = endpoint.generate(requests)
    assert [g.text for g in out[0::2]] != [g.text for g in out[1::2]]
    assert endpoint.adapter_fingerprint("ner") == "served:ner" and endpoint.adapter_fingerprint(None) == ""
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_decoder_path,
                                                                                dtype=torch.float32),
                                           lora_path).eval()
    for request, generation in zip(requests[1::2], out[1::2], strict=True):
        ids = prompt_ids(endpoint.tokenizer, request.prompt)
        assert generation.text == reference_greedy(peft_model, endpoint.tokenizer, ids, 10)
    with pytest.raises(EngineError, match="request 0: unknown adapter 'other'"):
        endpoint.generate([GenerationRequest(prompt="x", adapter="other")])


def test_429s_injected_by_a_proxy_are_retried(endpoint, proxy, monkeypatch, tiny_decoder_path):
    monkeypatch.setenv(KEY_ENV, SECRET)
    via = OpenAIEndpointEngine("tiny", base_url=proxy.url, api_key_env=KEY_ENV, tokenizer=str(tiny_decoder_path),
                               structured_outputs=True, loglikelihood=True, concurrency=4, backoff_s=0.05,
                               show_progress=False)
    assert via.model_id != endpoint.model_id  # another base URL: another cache identity
    requests = [GenerationRequest(prompt=p, max_tokens=12) for p in PROMPTS]
    requests.append(GenerationRequest(prompt=PROMPTS[0], json_schema=SCHEMA, max_tokens=64))
    proxy.reject, proxy.rejected = 5, 0
    out = via.generate(requests)
    assert out == endpoint.generate(requests)
    assert proxy.rejected == 5 and via.stats.retried_429 == 5 and via.stats.failed == 0
    proxy.reject = 2
    assert via.loglikelihood([ScoreRequest(*PAIRS[0])]) == endpoint.loglikelihood([ScoreRequest(*PAIRS[0])])
    assert via.stats.retried_429 == 7
    assert f"Bearer {SECRET}" in proxy.auth  # the key travels, in the header only
    via.close()


def _write_input(path: Path) -> Path:
    write_jsonl([Record(f"s{i}", text) for i, text in enumerate(SENTENCES)], path)
    return path


def test_same_predictions_as_the_offline_vllm_engine(server, tiny_decoder_path, tmp_path):
    """The same records through ``extract_file`` (greedy, constrained JSON): offline vLLM vs the endpoint."""
    from openie.engines.vllm_offline import VLLMEngine
    from openie.experiments.extract import extract_file

    data = _write_input(tmp_path / "in.jsonl")
    settings = dict(schema=["person", "location"], template="ner.json.v1", max_tokens=48, batch_size=4,
                    show_progress=False, save_io=True)
    endpoint_summary = extract_file(data, tmp_path / "endpoint.jsonl", backend="openai", model="tiny",
                                    engine_options={"base_url": f"{server.url}/v1", "tokenizer": str(tiny_decoder_path),
                                                    "show_progress": False}, **settings)
    offline = VLLMEngine(tiny_decoder_path, dtype="float32", max_model_len=512, kv_cache_memory_bytes=64 * 2**20,
                         enable_lora=False)
    try:
        extract_file(data, tmp_path / "offline.jsonl", engine=offline, **settings)
    finally:
        offline.close()
    endpoint_preds = list(read_jsonl(tmp_path / "endpoint.jsonl"))
    offline_preds = list(read_jsonl(tmp_path / "offline.jsonl"))
    assert len(endpoint_preds) == len(SENTENCES) and endpoint_summary.records == len(SENTENCES)
    assert [p.to_dict() for p in endpoint_preds] == [p.to_dict() for p in offline_preds]
    endpoint_io = (tmp_path / "endpoint.jsonl.io.jsonl").read_text()
    assert endpoint_io == (tmp_path / "offline.jsonl.io.jsonl").read_text()  # same prompts, same raw answers
    sidecar = json.loads((tmp_path / "endpoint.jsonl.run.json").read_text())
    assert sidecar["config"]["backend"] == "openai"
    assert sidecar["config"]["engine_options"]["base_url"] == f"{server.url}/v1"


def test_server_killed_mid_run_resumes_and_loses_nothing(server, proxy, tmp_path, monkeypatch):
    """``openie extract --backend openai`` through the proxy; the server is SIGKILLed at the run's 5th
    request: the run stops after its last whole batch with the failed requests on record, the
    re-run (server restarted) resumes, and the output equals an uninterrupted run's. The API key
    reaches the server and no file."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    data = _write_input(tmp_path / "in.jsonl")

    def extract(output: Path, *extra: str):
        return runner.invoke(app, ["extract", str(data), str(output), "--labels", "person,location",
                                   "--template", "ner.json.v1", "--max-tokens", "32", "--batch-size", "2",
                                   "--backend", "openai", "--base-url", proxy.url, "--model", "tiny",
                                   "--engine-option", f"api_key_env={KEY_ENV}", "--engine-option", "max_retries=2",
                                   "--engine-option", "backoff_s=0.05", "--engine-option", "concurrency=2",
                                   "--engine-option", "structured_outputs=true", "--engine-option", "loglikelihood=true",
                                   "--no-progress", *extra])

    reference = extract(tmp_path / "reference.jsonl", "--no-cache")
    assert reference.exit_code == 0, reference.output
    output, cache = tmp_path / "out.jsonl", tmp_path / "cache.sqlite"
    killed = threading.Event()

    def kill() -> None:
        os.killpg(server.pgid, signal.SIGKILL)
        while server.alive:
            time.sleep(0.05)
        killed.set()

    with proxy.lock:
        proxy.kill, proxy.kill_at = kill, proxy.posts + 5
    first = extract(output, "--cache", str(cache))
    assert killed.is_set()
    assert first.exit_code == 2, first.output
    failed_record = tmp_path / "out.jsonl.failed-requests.jsonl"
    assert "requests to tiny at" in first.output and str(failed_record) in first.output
    failed = [json.loads(line) for line in failed_record.read_text().splitlines()]
    assert failed and all(f["kind"] == "generate" and f["request"]["json_schema"] for f in failed)
    written = output.read_text().splitlines()
    assert len(written) == 4  # the two batches before the kill, whole
    server.stop()
    server.start()  # on another port: the proxy follows, the run's base URL stays

    second = extract(output, "--cache", str(cache))
    assert second.exit_code == 0, second.output
    assert f"({len(written)} resumed, {len(SENTENCES) - len(written)} new)" in second.output
    assert output.read_text() == (tmp_path / "reference.jsonl").read_text()  # nothing lost, nothing doubled
    assert not failed_record.exists()  # every failed request was retried
    assert f"Bearer {SECRET}" in proxy.auth
    assert SECRET not in first.output + second.output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
