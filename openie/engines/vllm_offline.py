"""The vLLM offline backend: one in-process ``vllm.LLM`` serving a base model and its LoRA adapters.

Prompts are rendered and tokenized by :mod:`openie.engines.tokenization` and handed to vLLM as
token ids, so this backend reads exactly the tokens the transformers+peft backend reads.

On CPU, vLLM's LoRA ops apply an adapter to base-model requests that share a batch with adapter
requests (see :mod:`openie.engines.vllm_plugin`). Two independent guards keep that out of
results: the plugin patches the ops, and by default this engine also calls vLLM once per
adapter on CPU, so no batch mixes adapters.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from openie.engines.base import (
    ADAPTER_WEIGHT_FILES,
    EngineCapabilities,
    EngineError,
    Generation,
    GenerationRequest,
    Score,
    ScoreRequest,
    UnsupportedRequestError,
    adapter_content_hash,
)
from openie.engines.tokenization import allowed_token_ids, prompt_ids, render_prompt, split_pair_ids

# Settings for a small in-process CPU engine (see DESIGN "vLLM on CPU"); set only where unset.
CPU_ENV_DEFAULTS = {
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}
# A whitespace-free grammar: small models otherwise loop on whitespace inside JSON.
STRUCTURED_OUTPUTS_CONFIG = {"backend": "xgrammar", "disable_any_whitespace": True}
# KV cache on CPU when nothing else is said: enough for batches of a few thousand tokens.
CPU_DEFAULT_KV_CACHE_BYTES = 1 << 30

# Ranks vLLM accepts for ``max_lora_rank``.
_VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _adapter_files(path: Path) -> list[Path]:
    return [path / f for f in ("adapter_config.json", *ADAPTER_WEIGHT_FILES) if (path / f).is_file()]


def adapter_rank(path: str | os.PathLike[str]) -> int:
    """The LoRA rank ``r`` from a peft adapter's ``adapter_config.json``."""
    cfg = json.loads((Path(path) / "adapter_config.json").read_text())
    ranks = [int(cfg.get("r", 8)), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    return max(ranks)


class VLLMEngine:
    """:class:`~openie.engines.base.Engine` over ``vllm.LLM`` with ``LoRARequest`` per request.

    ``adapters`` maps adapter names (what requests use) to peft adapter folders; more can be
    added with :meth:`add_adapter`. vLLM sees each adapter as ``name@<content hash>`` with its
    own integer id, so an adapter retrained under the same name is never served stale from
    vLLM's adapter or prefix cache.

    ``group_by_adapter`` (default: on CPU only) calls vLLM once per adapter, so a batch never
    mixes adapters; ``cpu_lora_fix`` patches vLLM's CPU LoRA ops in this process (the same
    patch the ``openie_cpu_lora_fix`` plugin applies in every vLLM process). Remaining keyword
    arguments go to ``vllm.LLM`` (e.g. ``gpu_memory_utilization``, ``kv_cache_memory_bytes``,
    ``enforce_eager``).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        adapters: Mapping[str, str | os.PathLike[str]] | None = None,
        *,
        max_loras: int = 4,
        max_lora_rank: int | None = None,
        max_cpu_loras: int | None = None,
        enable_lora: bool | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        group_by_adapter: bool | None = None,
        cpu_lora_fix: bool = True,
        cpu_threads: int | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        **llm_kwargs: Any,
    ):
        model_path = Path(model).expanduser()
        self.model_id = str(model_path.resolve()) if model_path.exists() else str(model)
        self._adapters: dict[str, Path] = {}
        self._fingerprints: dict[str, tuple[tuple, str]] = {}
        self._lora_ids: dict[str, int] = {}
        for name, path in (adapters or {}).items():
            self._check_adapter(name, path)
            self._adapters[name] = Path(path).expanduser().resolve()

        from openie.engines.vllm_plugin import patch_kernel_rebinding

        patch_kernel_rebinding()  # start-up must not depend on which other libraries are loaded
        on_cpu = _on_cpu()
        self.on_cpu = on_cpu
        if on_cpu:
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
            if cpu_threads is not None:
                # vLLM keeps torch's thread count only when OMP_NUM_THREADS is set.
                os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads))
                import torch

                torch.set_num_threads(cpu_threads)
            if cpu_lora_fix:
                from openie.engines.vllm_plugin import register

                register()
            llm_kwargs.setdefault("enforce_eager", True)
            if "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
                # otherwise vLLM reserves a fraction of *all* memory and refuses to start on a busy machine
                llm_kwargs.setdefault("kv_cache_memory_bytes", CPU_DEFAULT_KV_CACHE_BYTES)
        self.group_by_adapter = on_cpu if group_by_adapter is None else group_by_adapter

        self.enable_lora = bool(self._adapters) if enable_lora is None else enable_lora
        if self.enable_lora:
            if max_lora_rank is None:
                needed = max([8, *(adapter_rank(p) for p in self._adapters.values())])
                max_lora_rank = next((r for r in _VLLM_LORA_RANKS if r >= needed), needed)
            self.max_lora_rank = max_lora_rank
            for name, path in self._adapters.items():
                self._check_rank(name, path)
            llm_kwargs.update(enable_lora=True, max_loras=max_loras, max_lora_rank=max_lora_rank)
            if max_cpu_loras is not None:
                llm_kwargs["max_cpu_loras"] = max(max_cpu_loras, max_loras)
        else:
            self.max_lora_rank = 0
        llm_kwargs.setdefault("structured_outputs_config", dict(STRUCTURED_OUTPUTS_CONFIG))
        from openie.verbosity import is_quiet

        if is_quiet():
            llm_kwargs.setdefault("use_tqdm_on_load", False)
        if max_model_len is not None:
            llm_kwargs["max_model_len"] = max_model_len

        from openie.engines.hardware import announce, resolve_dtype

        choice = resolve_dtype(dtype, "cpu" if on_cpu else "cuda")
        announce(choice)
        self.dtype = choice.dtype  # never "auto": vLLM's own auto takes the checkpoint's bfloat16 on any CPU

        from vllm import LLM

        try:
            self._llm = LLM(model=str(model), tokenizer=str(tokenizer) if tokenizer else None, dtype=self.dtype,
                            seed=seed, **llm_kwargs)
        except Exception as e:
            raise EngineError(f"vLLM could not start for model {str(model)!r}: {type(e).__name__}: {e}") from e
        self.tokenizer = self._llm.get_tokenizer()
        self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(context_length=self.max_model_len, structured_outputs=True, allowed_texts=True,
                                  loglikelihood=True, lora=self.enable_lora, tokenizer=self.tokenizer)

    # ------------------------------------------------------------------ adapters

    def _check_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        if not name or not isinstance(name, str):
            raise EngineError(f"adapter names must be non-empty strings, got {name!r}")
        started = getattr(self, "_llm", None) is not None
        if started and not self.enable_lora:
            raise EngineError(f"adapter {name!r}: this engine was started without LoRA "
                              "(pass adapters or enable_lora=True to VLLMEngine)")
        p = Path(path).expanduser()
        if not (p / "adapter_config.json").is_file():
            raise EngineError(f"adapter {name!r}: {str(p)!r} is not a peft adapter folder (no adapter_config.json)")
        if started:
            self._check_rank(name, p)

    def _check_rank(self, name: str, path: Path) -> None:
        rank = adapter_rank(path)
        if rank > self.max_lora_rank:
            raise EngineError(f"adapter {name!r} has rank {rank} but the engine allows at most "
                              f"max_lora_rank={self.max_lora_rank}")

    def add_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Register (or re-point) an adapter name; vLLM loads it on first use."""
        self._check_adapter(name, path)
        self._adapters[name] = Path(path).expanduser().resolve()

    @property
    def adapters(self) -> dict[str, str]:
        return {name: str(path) for name, path in self._adapters.items()}

    def adapter_fingerprint(self, name: str | None) -> str:
        """sha256 over the adapter's config and weights ('' for the base model).

        Cached per name and re-hashed only when the files' size or modification time change.
        """
        if name is None:
            return ""
        path = self._adapter_path(name)
        files = _adapter_files(path)
        stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())
        cached = self._fingerprints.get(name)
        if cached is not None and cached[0] == (str(path), stamp):
            return cached[1]
        digest = adapter_content_hash(path)
        self._fingerprints[name] = ((str(path), stamp), digest)
        return digest

    def _adapter_path(self, name: str) -> Path:
        if name not in self._adapters:
            known = ", ".join(repr(n) for n in sorted(self._adapters)) or "none"
            raise EngineError(f"unknown adapter {name!r}; known adapters: {known}")
        return self._adapters[name]

    def _lora_request(self, name: str | None) -> Any:
        if name is None:
            return None
        from vllm.lora.request import LoRARequest

        path = self._adapter_path(name)
        vllm_name = f"{name}@{self.adapter_fingerprint(name)[:16]}"
        lora_id = self._lora_ids.setdefault(vllm_name, len(self._lora_ids) + 1)
        return LoRARequest(vllm_name, lora_id, str(path))

    # ------------------------------------------------------------------ running vLLM

    def _end_ids(self) -> set[int]:
        """The tokens vLLM ends a completion on (tokenizer EOS and the checkpoint's generation config)."""
        ends = {self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set()
        config = self._llm.llm_engine.model_config
        eos = (getattr(config, "hf_config", None) and getattr(config.hf_config, "eos_token_id", None))
        ends.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
        try:
            extra = config.try_get_generation_config().get("eos_token_id")
        except Exception:  # older vLLM, or no generation config
            extra = None
        ends.update(extra if isinstance(extra, list) else [extra] if isinstance(extra, int) else [])
        return ends

    @property
    def llm(self) -> Any:
        """The underlying ``vllm.LLM`` (for experiments that need vLLM directly)."""
        if self._llm is None:
            raise EngineError("this VLLMEngine has been closed")
        return self._llm

    def _check_length(self, index: int, kind: str, n_tokens: int, extra: int = 1) -> None:
        if n_tokens + extra > self.max_model_len:
            raise EngineError(f"{kind} {index}: prompt has {n_tokens} tokens but the engine's max_model_len is "
                              f"{self.max_model_len} (at least {extra} more token(s) must fit)")

    def _run(self, prompts: list[Any], params: list[Any], adapters: list[str | None]) -> list[Any]:
        """``LLM.generate`` over the prompts, once per adapter when grouping, in input order."""
        loras = [self._lora_request(a) for a in adapters]  # unknown names fail before vLLM runs
        if not self.enable_lora and any(lr is not None for lr in loras):
            raise EngineError("this engine was started without LoRA support")
        groups: dict[str | None, list[int]] = {}
        for i, a in enumerate(adapters):
            groups.setdefault(a if self.group_by_adapter else "", []).append(i)
        outputs: list[Any] = [None] * len(prompts)
        for idx in groups.values():
            try:
                outs = self.llm.generate([prompts[i] for i in idx], [params[i] for i in idx], use_tqdm=False,
                                         lora_request=[loras[i] for i in idx] if self.enable_lora else None)
            except Exception as e:
                if isinstance(e, ValueError | _vllm_client_error()):
                    raise UnsupportedRequestError(f"vLLM rejected a request: {type(e).__name__}: {e}") from e
                raise EngineError(f"vLLM failed: {type(e).__name__}: {e}") from e
            for i, out in zip(idx, outs, strict=True):
                outputs[i] = out
        return outputs

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        prompts, params, adapters = [], [], []
        for i, r in enumerate(requests):
            ids = prompt_ids(self.tokenizer, render_prompt(self.tokenizer, r))
            self._check_length(i, "request", len(ids))
            structured = None
            if r.json_schema is not None:
                _check_json_schema(i, r.json_schema)
                structured = StructuredOutputsParams(json=r.json_schema)
            allowed = (allowed_token_ids(self.tokenizer, r.allowed_texts, self._end_ids())
                       if r.allowed_texts is not None else None)
            params.append(SamplingParams(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
                                         stop=list(r.stop) or None, seed=r.seed, structured_outputs=structured,
                                         allowed_token_ids=allowed))
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            adapters.append(r.adapter)
        if not prompts:
            return []
        outputs = self._run(prompts, params, adapters)
        results = []
        for out in outputs:
            c = out.outputs[0]
            results.append(Generation(text=c.text, finish_reason="length" if c.finish_reason == "length" else "stop",
                                      prompt_tokens=len(out.prompt_token_ids),
                                      completion_tokens=len(c.token_ids)))
        return results

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params, adapters, n_cont = [], [], [], []
        for i, r in enumerate(requests):
            ctx, cont = split_pair_ids(self.tokenizer, r.context, r.continuation)
            if not cont:
                raise EngineError(f"score request {i}: the continuation {r.continuation!r} encodes to no tokens")
            ids = ctx + cont
            self._check_length(i, "score request", len(ids))
            prompts.append(TokensPrompt(prompt_token_ids=ids))
            params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
            adapters.append(r.adapter)
            n_cont.append(len(cont))
        if not prompts:
            return []
        outputs = self._run(prompts, params, adapters)
        scores = []
        for out, n in zip(outputs, n_cont, strict=True):
            ids = out.prompt_token_ids
            plp = out.prompt_logprobs
            total = 0.0
            for pos in range(len(ids) - n, len(ids)):
                total += float(plp[pos][ids[pos]].logprob)
            scores.append(Score(logprob=total, mean_logprob=total / n, n_tokens=n))
        return scores

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Free the engine (memory, KV cache); the object can no longer serve requests."""
        llm = getattr(self, "_llm", None)
        self._llm = None
        if llm is not None:
            engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            shutdown = getattr(engine_core, "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception:  # pragma: no cover - best effort on teardown
                    pass
            del llm
        gc.collect()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VLLMEngine(model_id={self.model_id!r}, adapters={sorted(self._adapters)})"


def _vllm_client_error() -> type[Exception]:
    """vLLM's error for a bad request (not a ValueError in vLLM 0.32), where this vLLM has one."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # pragma: no cover - older vLLM
        return ValueError
    return VLLMClientError


def _check_json_schema(index: int, schema: Any) -> None:
    """Reject an invalid JSON Schema before vLLM sees it, naming the offending part."""
    import jsonschema

    if not isinstance(schema, dict):
        raise UnsupportedRequestError(f"request {index}: json_schema must be a JSON object, got {type(schema).__name__}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "<root>"
        raise UnsupportedRequestError(f"request {index}: invalid JSON schema at {where}: {e.message}") from e
