"""The vLLM server backend against a real ``vllm`` OpenAI-compatible server on a tiny random Qwen2.

One server for the whole module (start-up is most of the cost); transformers + peft computed
directly on the same ids are the reference. Retries run against a tiny local HTTP server, and
start-up failures and a crash mid-run against a stand-in server process (cheap to kill).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from openie.engines import vllm_available
from openie.engines.base import Engine, EngineError, GenerationRequest, ScoreRequest, UnsupportedRequestError
from openie.engines.tokenization import prompt_ids, render_prompt, split_pair_ids
from openie.testing import build_random_lora, reference_greedy, reference_logprob

PROMPTS = ["Marie Curie was born in", "The capital of France is", "Alice Johnson works for",
           "An event has a trigger", "Researchers compare methods on", "The quick brown fox",
           "Apple Inc. is a technology company", "On Monday the committee"]
SCHEMA = {
    "type": "object",
    "properties": {"type": {"enum": ["person", "location", "organization"]},
                   "text": {"type": "string", "maxLength": 12}},
    "required": ["type", "text"],
    "additionalProperties": False,
}




# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def adapter_paths(tiny_decoder_path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vllm-server-adapters")
    return {name: build_random_lora(tiny_decoder_path, root / name, seed) for name, seed in (("A", 1), ("B", 2))}


@pytest.fixture(scope="module")
def engine(tiny_decoder_path):
    if not vllm_available():
        pytest.skip("vLLM is not installed")
    from openie.engines.vllm_server import VLLMServerEngine

    started = time.monotonic()
    eng = VLLMServerEngine(tiny_decoder_path, dtype="float32", max_model_len=512, max_loras=2, max_lora_rank=8,
                           kv_cache_memory_bytes=64 * 2**20, omp_num_threads=1, startup_timeout_s=400,
                           max_concurrency=16, show_progress=False)
    print(f"vLLM server ready in {time.monotonic() - started:.1f} s (log: {eng.server.log_path})")
    yield eng
    eng.close()


# ---------------------------------------------------------------------------------- generation


def test_greedy_base_matches_transformers(engine, hf_model):
    requests = [GenerationRequest(prompt=p, max_tokens=12) for p in PROMPTS]
    chat = GenerationRequest(messages=({"role": "user", "content": "Name a city."},), max_tokens=12)
    assert isinstance(engine, Engine)
    out = engine.generate([*requests, chat])
    again = engine.generate([*requests, chat])
    assert out == again  # greedy is deterministic
    for request, generation in zip([*requests, chat], out, strict=True):
        ids = prompt_ids(engine.tokenizer, render_prompt(engine.tokenizer, request))
        assert generation.prompt_tokens == len(ids)  # the server saw exactly our ids
        assert generation.text == reference_greedy(hf_model, engine.tokenizer, ids, 12)
        assert generation.finish_reason in ("stop", "length")
        assert 1 <= generation.completion_tokens <= 12
    assert any(g.text for g in out)


def test_sampling_parameters_pass_through(engine):
    seeded = GenerationRequest(prompt=PROMPTS[0], max_tokens=16, temperature=1.0, top_p=0.9, seed=7)
    first, second = engine.generate([seeded, seeded])
    assert first == second  # same seed, same text
    text = engine.generate([GenerationRequest(prompt=PROMPTS[1], max_tokens=24)])[0].text
    assert len(text) > 2
    stop = text[1:3]  # a stop string the greedy output is known to contain
    stopped = engine.generate([GenerationRequest(prompt=PROMPTS[1], max_tokens=24, stop=(stop,))])[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[:text.index(stop)]
    full, short = engine.generate([GenerationRequest(prompt=PROMPTS[1], max_tokens=24),
                                   GenerationRequest(prompt=PROMPTS[1], max_tokens=3)])
    if full.completion_tokens > 3:  # the greedy text goes on: the short one was cut
        assert (short.finish_reason, short.completion_tokens) == ("length", 3)


def test_json_schema_output_parses_and_validates(engine):
    import jsonschema

    requests = [GenerationRequest(prompt=p, json_schema=SCHEMA, max_tokens=64) for p in PROMPTS[:4]]
    for generation in engine.generate(requests):
        assert generation.finish_reason == "stop", generation
        jsonschema.validate(json.loads(generation.text), SCHEMA)


def test_invalid_schema_is_rejected_before_sending(engine):
    with pytest.raises(UnsupportedRequestError, match="request 1: invalid JSON schema"):
        engine.generate([GenerationRequest(prompt="x"), GenerationRequest(prompt="x", json_schema={"type": "foo"})])


def test_prompt_longer_than_context_is_refused_locally(engine):
    long_prompt = " ".join(["Paris"] * 600)
    assert len(prompt_ids(engine.tokenizer, long_prompt)) >= 512
    with pytest.raises(EngineError, match=r"request 0: the prompt has \d+ tokens.*context window is 512"):
        engine.generate([GenerationRequest(prompt=long_prompt)])
    with pytest.raises(EngineError, match="context window is 512"):
        engine.loglikelihood([ScoreRequest(context=long_prompt, continuation=" Paris")])


# ---------------------------------------------------------------------------------- adapters


def test_runtime_adapter_load_generate_unload(engine, adapter_paths):
    from openie.engines.hf import adapter_content_hash

    requests = [GenerationRequest(prompt=p, max_tokens=12) for p in PROMPTS[:4]]
    base = engine.generate(requests)
    served = engine.load_adapter("A", adapter_paths["A"])
    assert served == f"A-{adapter_content_hash(adapter_paths['A'])[:12]}"
    assert engine.adapter_fingerprint("A") == adapter_content_hash(adapter_paths["A"])
    assert engine.adapter_fingerprint(None) == ""
    assert engine.load_adapter("A", adapter_paths["A"]) == served  # same files: a no-op
    tuned = engine.generate([GenerationRequest(prompt=r.prompt, max_tokens=12, adapter="A") for r in requests])
    assert [g.text for g in tuned] != [g.text for g in base]
    engine.unload_adapter("A")
    assert "A" not in engine.adapters
    with pytest.raises(EngineError, match="unknown adapter 'A'"):
        engine.generate([GenerationRequest(prompt="x", adapter="A")])
    with pytest.raises(EngineError, match="unknown adapter 'A'"):
        engine.loglikelihood([ScoreRequest(context="x", continuation=" y", adapter="A")])
    with pytest.raises(EngineError, match="unknown adapter 'A'"):
        engine.adapter_fingerprint("A")


def test_adapter_unloaded_behind_the_engines_back_is_a_clear_error(engine, adapter_paths):
    served = engine.load_adapter("A", adapter_paths["A"])
    assert engine._client.post("/v1/unload_lora_adapter", json={"lora_name": served}).status_code == 200
    with pytest.raises(EngineError, match=rf"adapter 'A' \(served as '{served}'\) is not loaded on the vLLM server"):
        engine.generate([GenerationRequest(prompt="x", adapter="A", max_tokens=2)])
    engine.unload_adapter("A")  # the server already dropped it: still fine


def test_retrained_adapter_gets_a_new_served_name(engine, adapter_paths, tiny_decoder_path, tmp_path):
    import shutil

    path = tmp_path / "retrained"
    shutil.copytree(adapter_paths["A"], path)
    old = engine.load_adapter("R", path)
    before = engine.generate([GenerationRequest(prompt=PROMPTS[0], max_tokens=12, adapter="R")])
    shutil.rmtree(path)
    build_random_lora(tiny_decoder_path, path, seed=3)  # "retrained" in place, same name
    new = engine.load_adapter("R", path)
    assert new != old
    served = {m["id"] for m in engine._client.get("/v1/models").json()["data"]}
    assert new in served and old not in served
    after = engine.generate([GenerationRequest(prompt=PROMPTS[0], max_tokens=12, adapter="R")])
    assert after != before
    engine.unload_adapter("R")


def test_mixed_base_and_adapter_batch_keeps_base_outputs(engine, adapter_paths):
    """vLLM's CPU LoRA ops apply the last slot's adapter to base requests batched with adapter
    requests (both slots filled here: max_loras=2); the openie vLLM plugin fixes that."""
    engine.load_adapter("A", adapter_paths["A"])
    engine.load_adapter("B", adapter_paths["B"])
    try:
        def requests(adapter):
            return [GenerationRequest(prompt=p, max_tokens=16, adapter=adapter) for p in PROMPTS]

        alone = {name: engine.generate(requests(name)) for name in (None, "A", "B")}
        mixed = engine.generate([r for triple in zip(requests(None), requests("A"), requests("B"), strict=True)
                                 for r in triple])
        assert [g.text for g in mixed[0::3]] == [g.text for g in alone[None]], "base requests got an adapter"
        assert [g.text for g in mixed[1::3]] == [g.text for g in alone["A"]]
        assert [g.text for g in mixed[2::3]] == [g.text for g in alone["B"]]
    finally:
        engine.unload_adapter("A")
        engine.unload_adapter("B")


# ---------------------------------------------------------------------------------- scoring


PAIRS = [("Marie Curie was born in", " Warsaw"), ("The capital of France is", " Paris, a city."),
         ("", "Berlin is the capital of Germany"), ("Alice Johnson works for", " Acme Corporation in London")]


def test_loglikelihood_matches_transformers(engine, hf_model):
    scores = engine.loglikelihood([ScoreRequest(context=c, continuation=x) for c, x in PAIRS])
    for (context, continuation), score in zip(PAIRS, scores, strict=True):
        ctx, cont = split_pair_ids(engine.tokenizer, context, continuation)
        ctx = ctx or [engine.tokenizer.bos_token_id]
        assert score.n_tokens == len(cont)
        assert score.logprob == pytest.approx(reference_logprob(hf_model, ctx, cont), abs=1e-3)
        assert score.mean_logprob == pytest.approx(score.logprob / len(cont))


def test_adapter_loglikelihood_matches_peft(engine, adapter_paths, tiny_decoder_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    engine.load_adapter("A", adapter_paths["A"])
    try:
        scores = engine.loglikelihood([ScoreRequest(context=c, continuation=x, adapter="A") for c, x in PAIRS])
        base = engine.loglikelihood([ScoreRequest(context=c, continuation=x) for c, x in PAIRS])
    finally:
        engine.unload_adapter("A")
    model = AutoModelForCausalLM.from_pretrained(tiny_decoder_path, dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(model, adapter_paths["A"]).eval()
    for (context, continuation), score, plain in zip(PAIRS, scores, base, strict=True):
        ctx, cont = split_pair_ids(engine.tokenizer, context, continuation)
        ctx = ctx or [engine.tokenizer.bos_token_id]
        assert score.logprob == pytest.approx(reference_logprob(peft_model, ctx, cont), abs=1e-3)
        assert abs(score.logprob - plain.logprob) > 1e-3


# ---------------------------------------------------------------------------------- attach


def test_attach_by_url(engine, adapter_paths):
    from openie.engines.vllm_server import VLLMServerEngine

    attached = VLLMServerEngine.attach(engine.url, show_progress=False)
    try:
        assert not attached.owns_server
        assert attached.served_model_name == engine.served_model_name
        assert attached.max_model_len == 512
        assert attached.model_id == engine.model_id
        requests = [GenerationRequest(prompt=p, max_tokens=8) for p in PROMPTS[:3]]
        assert attached.generate(requests) == engine.generate(requests)
        pair = [ScoreRequest(context=PAIRS[0][0], continuation=PAIRS[0][1])]
        assert attached.loglikelihood(pair) == engine.loglikelihood(pair)
        with pytest.raises(EngineError, match="unknown adapter 'A'"):
            attached.generate([GenerationRequest(prompt="x", adapter="A")])
        attached.load_adapter("A", adapter_paths["A"])  # adapters load through an attached engine too
        assert attached.generate([GenerationRequest(prompt=PROMPTS[0], max_tokens=8, adapter="A")])[0].text
        attached.unload_adapter("A")
        with pytest.raises(EngineError, match="serves no base model named 'nope'"):
            VLLMServerEngine.attach(engine.url, model="nope")
    finally:
        attached.close()
    assert engine.server.alive  # closing an attached engine leaves the server running


# ---------------------------------------------------------------------------------- retries


class _FlakyHandler(BaseHTTPRequestHandler):
    """Serves ``/v1/models`` and answers ``/v1/completions`` with the next status in ``script``."""

    script: list[int] = []
    calls: list[float] = []

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "tiny", "root": "tiny", "parent": None,
                                                     "max_model_len": 512}]})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls.append(time.monotonic())
        status = type(self).script.pop(0) if type(self).script else 200
        if status == 200:
            self._send(200, {"choices": [{"text": "ok", "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
        else:
            self._send(status, {"error": {"message": f"scripted {status}", "code": status}})


@pytest.fixture
def flaky_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _FlakyHandler.script, _FlakyHandler.calls = [], []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_retries_with_backoff_on_5xx(flaky_server, tiny_decoder_path):
    from openie.engines.vllm_server import VLLMServerEngine

    eng = VLLMServerEngine.attach(flaky_server, tokenizer_path=tiny_decoder_path, max_retries=3, backoff_s=0.05)
    _FlakyHandler.script = [503, 503]
    out = eng.generate([GenerationRequest(prompt="hello")])
    assert out[0].text == "ok" and out[0].finish_reason == "stop"
    calls = _FlakyHandler.calls
    assert len(calls) == 3
    assert calls[1] - calls[0] >= 0.045 and calls[2] - calls[1] >= 0.095  # 0.05 s, then 0.1 s

    _FlakyHandler.calls, _FlakyHandler.script = [], [503] * 5
    with pytest.raises(EngineError, match=r"failed 4 time\(s\); last error: HTTP 503: scripted 503"):
        eng.generate([GenerationRequest(prompt="hello")])
    assert len(_FlakyHandler.calls) == 4

    _FlakyHandler.calls, _FlakyHandler.script = [], [400]
    with pytest.raises(EngineError, match="HTTP 400: scripted 400"):
        eng.generate([GenerationRequest(prompt="hello")])
    assert len(_FlakyHandler.calls) == 1  # a bad request is not retried
    eng.close()


def test_unreachable_server_is_a_clear_error(tiny_decoder_path):
    from openie.engines.vllm_server import VLLMServerEngine

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EngineError, match=rf"127.0.0.1:{port} failed 2 time\(s\); last error: ConnectError"):
        VLLMServerEngine.attach(f"http://127.0.0.1:{port}", tokenizer_path=tiny_decoder_path,
                                max_retries=1, backoff_s=0.01)


# ---------------------------------------------------------------------------------- shutdown


def _live_group_members(pgid: int) -> list[int]:
    from openie.engines.vllm_server import _group_members

    return _group_members(pgid)


# A stand-in for the vLLM API server process, to kill mid-request without losing the real one:
# it answers /health and /v1/models, holds /v1/completions open, and has a child in its process
# group (as vLLM's engine core is).
_STAND_IN = """
import json, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = json.dumps({"data": [{"id": "tiny", "root": "tiny", "parent": None, "max_model_len": 512}]}).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        time.sleep(120)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def _stand_in_server(script: str, tmp_path, **kwargs):
    """A :class:`VLLMServer` whose process runs ``script`` (argv[1] is the port) instead of vLLM."""
    import sys

    from openie.engines.vllm_server import VLLMServer

    class StandInServer(VLLMServer):
        def command(self) -> list[str]:
            return [sys.executable, "-c", script, str(self.port)]

    return StandInServer("stand-in-model", log_path=tmp_path / "server.log", **kwargs)


def test_start_up_failure_shows_the_log_tail(tmp_path):
    server = _stand_in_server("import sys; print('CUDA out of fish'); sys.exit(3)", tmp_path)
    with pytest.raises(EngineError, match=r"exited with code 3 while starting(.|\n)*CUDA out of fish"):
        server.start()
    assert not server.alive


def test_start_up_timeout_stops_the_server(tmp_path):
    server = _stand_in_server("import time; print('loading weights...', flush=True); time.sleep(60)", tmp_path,
                              startup_timeout_s=1.0)
    with pytest.raises(EngineError, match=r"not ready after 1 s(.|\n)*loading weights"):
        server.start()
    assert _live_group_members(server.pgid) == []


def test_server_death_mid_run_is_reported(tiny_decoder_path, tmp_path):
    """The engine's own server process dies with requests in flight: the engine says so (not
    "connection refused", no long retry loop) and ends what the server left in its group."""
    from openie.engines.vllm_server import VLLMServerEngine

    server = _stand_in_server(_STAND_IN, tmp_path, startup_timeout_s=30)
    eng = VLLMServerEngine(server=server, tokenizer_path=tiny_decoder_path, max_retries=5, backoff_s=2.0,
                           show_progress=False)
    pgid = server.pgid
    assert len(_live_group_members(pgid)) == 2
    killer = threading.Timer(0.5, os.kill, (server.pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"request \d+: the vLLM server process \(pid \d+\) died "
                                          r"\(killed by SIGKILL\)"):
        eng.generate([GenerationRequest(prompt=p, max_tokens=8) for p in PROMPTS])
    assert time.monotonic() - started < 10  # no 2 + 4 + 8 + ... s of retries against a dead server
    killer.join()
    assert _live_group_members(pgid) == []  # the orphaned child was ended too
    eng.close()


def test_stop_leaves_no_process_behind(engine):
    """A clean stop of the module's real server (so it runs last): SIGTERM reaches the whole
    process group, nothing is left, nothing listens on the port."""
    server = engine.server
    pgid, port = server.pgid, server.port
    assert len(_live_group_members(pgid)) >= 2  # API server + engine core
    started = time.monotonic()
    engine.close()
    print(f"stopped in {time.monotonic() - started:.1f} s")
    assert not server.alive
    assert server.returncode is not None and server.returncode != -signal.SIGKILL  # ended by SIGTERM
    assert _live_group_members(pgid) == []
    with pytest.raises(ConnectionRefusedError):  # nothing listens on the port any more
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert server.stop() == server.returncode  # idempotent
    with pytest.raises(EngineError, match="closed"):
        engine.generate([GenerationRequest(prompt="x")])
