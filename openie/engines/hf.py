"""The transformers + peft engine: the backend that runs anywhere (CPU or one GPU), LoRA adapters included.

It is the reference the faster vLLM backends are checked against, so it favours being exact and
predictable over being fast:

- Prompts become token ids through :mod:`openie.engines.tokenization`, exactly as in every other
  backend, and generation starts from those ids (never from re-tokenised text).
- Several LoRA adapters sit on one base model (peft). A ``generate`` call is split into one
  ``model.generate`` per adapter (base requests run inside ``disable_adapter()``), so a request's
  output never depends on which adapters its neighbours asked for.
- Everything that differs per request (max_tokens, stop strings, temperature, top_p, seed, JSON
  schema) is handled per row by a small decoding controller, so requests that differ only in those
  still share one left-padded batch. Sampling draws each row's token from that request's own
  ``torch.Generator``: a seeded request gives the same text whatever else is in the batch.
- JSON-Schema constrained decoding masks logits with an xgrammar grammar compiled with
  ``any_whitespace=False`` and compact separators, the grammar vLLM builds with
  ``disable_any_whitespace`` (the setting that keeps small models from looping on whitespace).
"""

from __future__ import annotations

import inspect
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    StoppingCriteria,
    StoppingCriteriaList,
)

from openie.engines.base import (
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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} requested but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device, *, training: bool = False) -> torch.dtype:
    """``auto``: bfloat16 where the hardware computes it natively (a GPU with bf16, a CPU with
    AVX512_BF16 / AMX), float16 on other GPUs, float32 otherwise (:mod:`openie.engines.hardware`).

    ``training=True`` keeps float32 on every CPU: pure bfloat16 weights lose small LoRA updates.
    """
    from openie.engines.hardware import announce
    from openie.engines.hardware import resolve_dtype as resolve_name

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto" and training and device.type == "cpu":
        return torch.float32
    cuda = (True, torch.cuda.is_bf16_supported()) if device.type == "cuda" else (False, False)
    choice = resolve_name(dtype, "cuda" if device.type == "cuda" else "cpu", cuda=cuda)
    if not training:
        announce(choice)
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[choice.dtype]


@dataclass
class _Row:
    """Decoding state of one request inside a ``model.generate`` batch."""

    index: int
    ids: list[int]
    max_new: int
    max_tokens: int
    stop: tuple[str, ...]
    temperature: float
    top_p: float
    generator: torch.Generator | None
    matcher: Any = None
    allowed: list[int] | None = None  # the only tokens this row may produce (request.allowed_texts)
    tokens: list[int] = field(default_factory=list)
    done: bool = False
    finish: str = "length"
    stop_at: int | None = None  # character offset of the first stop string in the decoded text
    grammar_error: bool = False


class _RowStopper(StoppingCriteria):
    """Reads the token each row just produced and decides, per row, whether the row is finished."""

    def __init__(self, rows: list[_Row], eos_ids: set[int], tokenizer: Any):
        self.rows, self.eos_ids, self.tokenizer = rows, eos_ids, tokenizer

    def __call__(self, input_ids: torch.LongTensor, scores: Any = None, **kwargs: Any) -> torch.BoolTensor:
        last = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, last, strict=True):
            if row.done:
                continue
            row.tokens.append(token)
            if token in self.eos_ids:
                row.done, row.finish = True, "stop"
                continue
            if row.matcher is not None and not row.matcher.is_terminated() and not row.matcher.accept_token(token):
                row.done, row.finish, row.grammar_error = True, "length", True
                continue
            if row.stop:
                text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
                hits = [text.find(s) for s in row.stop if s in text]
                if hits:
                    row.done, row.finish, row.stop_at = True, "stop", min(hits)
                    continue
            if len(row.tokens) >= row.max_new:
                row.done, row.finish = True, "length"
        return torch.tensor([row.done for row in self.rows], dtype=torch.bool, device=input_ids.device)


class _RowSampler(LogitsProcessor):
    """Applies each row's grammar mask, then samples sampled rows from their own generator.

    ``model.generate`` runs greedy; a sampled row gets all logits but the drawn token set to -inf,
    so the argmax picks the token drawn here with that request's temperature, top_p and seed.
    """

    def __init__(self, rows: list[_Row], vocab_size: int):
        self.rows = rows
        self.vocab_size = vocab_size
        self.bitmask = None
        if any(row.matcher is not None for row in rows):
            import xgrammar as xgr

            self._xgr = xgr
            self.bitmask = xgr.allocate_token_bitmask(len(rows), vocab_size)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.bitmask is not None:
            masked = []
            for i, row in enumerate(self.rows):
                if row.matcher is not None and not row.done and not row.matcher.is_terminated():
                    row.matcher.fill_next_token_bitmask(self.bitmask, i)
                    masked.append(i)
            if masked:
                on_cpu = scores.device.type != "cuda"
                target = scores.float().cpu() if on_cpu else scores
                self._xgr.apply_token_bitmask_inplace(target, self.bitmask.to(target.device), indices=masked)
                if on_cpu:
                    scores = target.to(device=scores.device, dtype=scores.dtype)
        for i, row in enumerate(self.rows):
            if row.allowed is not None and not row.done:
                keep = torch.full_like(scores[i], -math.inf)
                keep[row.allowed] = 0.0
                scores[i] = scores[i] + keep
        for i, row in enumerate(self.rows):
            if row.done or row.temperature <= 0:
                continue
            logits = scores[i].float() / row.temperature
            probs = torch.softmax(logits, dim=-1)
            if row.top_p < 1.0:
                sorted_probs, order = torch.sort(probs, descending=True)
                drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs > row.top_p
                sorted_probs[drop] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            token = torch.multinomial(probs, 1, generator=row.generator).item()
            scores[i].fill_(-math.inf)
            scores[i, token] = 0.0
        return scores


class _BeamAllowed(LogitsProcessor):
    """Per input row, only its allowed tokens; beam search expands row r into rows r*beams..r*beams+beams-1."""

    def __init__(self, allowed: list[list[int]], beams: int):
        self.allowed, self.beams = allowed, beams

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, -math.inf)
        for row in range(scores.shape[0]):
            mask[row, self.allowed[row // self.beams]] = 0.0
        return scores + mask


class TransformersEngine:
    """An :class:`~openie.engines.base.Engine` over a transformers causal LM with peft LoRA adapters.

    ``model`` is a hub id or local folder (or an already loaded ``PreTrainedModel``, then pass
    ``model_id``); ``adapters`` maps adapter names to peft folders. ``batch_size`` bounds the rows
    of one forward pass; ``max_model_len`` is the context window (default: the model config's).
    Extra ``model_kwargs`` go to ``from_pretrained`` (e.g. ``gguf_file=``); ``tokenizer`` overrides
    the tokenizer (a folder or a loaded tokenizer), e.g. a rebuilt GGUF tokenizer. A default
    model's short name (``gemma-3-270m``) is resolved through :func:`openie.models.resolve_model`;
    ``model_id`` (the cache key) stays the name given.

    Semantics shared with the other backends:

    - ``seed``: a sampled request (temperature > 0) draws every token from its own
      ``torch.Generator`` seeded with ``seed``, so its text does not depend on the other requests
      of the call (up to float noise from padding) and repeats across calls on the same device and
      torch version; ``seed=None`` seeds that generator from torch's global RNG. Greedy requests
      ignore the seed. Seeds do not reproduce vLLM's samples (different RNG streams).
    - ``completion_tokens`` counts generated tokens including a final end token; the text never
      contains it (special tokens are skipped) nor a stop string (the text ends before the first).
    - ``finish_reason`` is ``stop`` for an end token or a stop string, ``length`` when
      ``max_tokens`` or the context window ran out first (a constrained output cut there is
      unfinished JSON).
    - The checkpoint's own sampling defaults (``generation_config.json``) are not applied.
    - ``num_beams`` > 1 decodes greedy requests without a JSON schema by beam search (BANER); the
      beam count is part of ``model_id`` and so of every cache key.
    """

    def __init__(self, model: str | Path | PreTrainedModel, adapters: Mapping[str, str | Path] | None = None, *,
                 tokenizer: Any = None, device: str = "auto", dtype: str | torch.dtype = "auto",
                 batch_size: int = 8, max_model_len: int | None = None, model_id: str | None = None,
                 model_kwargs: Mapping[str, Any] | None = None, num_beams: int = 1):
        if batch_size < 1:
            raise EngineError(f"batch_size must be >= 1, got {batch_size}")
        if num_beams < 1:
            raise EngineError(f"num_beams must be >= 1, got {num_beams}")
        self.num_beams = num_beams
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = batch_size
        if isinstance(model, PreTrainedModel):
            base = model
            self.model_id = model_id or str(getattr(model, "name_or_path", "") or type(model).__name__)
        else:
            from openie.models import resolve_model

            self.model_id = model_id or str(model)
            model = resolve_model(model)  # a default model's short name -> its converted folder
            base = AutoModelForCausalLM.from_pretrained(model, dtype=self.dtype, **dict(model_kwargs or {}))
        base = base.to(self.device).eval()
        if tokenizer is None or isinstance(tokenizer, str | Path):
            source = tokenizer or (base.name_or_path if isinstance(model, PreTrainedModel) else model)
            gguf = (model_kwargs or {}).get("gguf_file") if tokenizer is None else None
            tokenizer = AutoTokenizer.from_pretrained(str(source), **({"gguf_file": gguf} if gguf else {}))
        self.tokenizer = tokenizer
        self.model: Any = base
        self._base = base
        self.max_model_len = max_model_len or self._config_context_len(base.config)
        self.eos_ids = self._eos_ids(base, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (min(self.eos_ids) if self.eos_ids else 0)
        self.vocab_size = base.get_output_embeddings().weight.shape[0]
        # The checkpoint's sampling defaults (generation_config.json: top_k, repetition_penalty, ...)
        # would silently change greedy outputs and differ from other backends: requests carry every
        # sampling parameter, so generation starts from a neutral config with only the special tokens.
        self.checkpoint_generation_config = getattr(base, "generation_config", None)
        base.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=self.pad_id,
                                                  eos_token_id=sorted(self.eos_ids) or None)
        self._adapter_paths: dict[str, Path] = {}
        self._fingerprints: dict[str, str] = {}
        self._grammar_compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        if num_beams > 1:
            self.model_id = f"{self.model_id}#beams={num_beams}"
        for name, path in (adapters or {}).items():
            self.add_adapter(name, path)

    @property
    def capabilities(self) -> EngineCapabilities:
        return EngineCapabilities(context_length=self.max_model_len, structured_outputs=True, allowed_texts=True,
                                  loglikelihood=True, lora=True, tokenizer=self.tokenizer)

    def close(self) -> None:
        """Drop the model's weights (a run that starts several engines frees each when done)."""
        import gc

        self.model = self._base = None
        gc.collect()

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _config_context_len(config: Any) -> int | None:
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(text_config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
        """End tokens: the generation config's (often also end-of-turn) and the tokenizer's EOS."""
        ids: set[int] = set()
        for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                      getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids

    @property
    def adapters(self) -> list[str]:
        return sorted(self._adapter_paths)

    def add_adapter(self, name: str, path: str | Path, *, replace: bool = False) -> None:
        """Load a peft LoRA folder under ``name`` (``replace`` swaps an adapter already loaded)."""
        from peft import PeftModel

        path = Path(path)
        if not (path / "adapter_config.json").is_file():
            raise EngineError(f"adapter {name!r}: {path} is not a peft adapter folder (no adapter_config.json)")
        if name in self._adapter_paths:
            if not replace:
                raise EngineError(f"adapter {name!r} is already loaded (from {self._adapter_paths[name]}); "
                                  "pass replace=True to swap it")
            self.model.delete_adapter(name)
            self._fingerprints.pop(name, None)
            del self._adapter_paths[name]
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=name)
        else:
            self.model = PeftModel.from_pretrained(self._base, str(path), adapter_name=name)
        self.model.to(self.device).eval()
        self._adapter_paths[name] = path
        # Hashed now, so the fingerprint describes the weights in memory even if the folder is
        # rewritten later (e.g. retrained in place).
        self._fingerprints[name] = adapter_content_hash(path)

    def adapter_fingerprint(self, name: str | None) -> str:
        if name is None:
            return ""
        self._check_adapter(name)
        return self._fingerprints[name]

    def _check_adapter(self, name: str | None, where: str = "") -> None:
        if name is not None and name not in self._adapter_paths:
            raise EngineError(f"{where}unknown adapter {name!r}; known adapters: "
                              f"{', '.join(self.adapters) or '(none loaded)'}")

    def _use_adapter(self, name: str | None) -> Any:
        """Context in which the model runs as ``name`` (``None``: the bare base weights)."""
        if not self._adapter_paths:
            return nullcontext()
        if name is None:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return nullcontext()

    def _grammar(self, schema: dict[str, Any]) -> Any:
        key = json.dumps(schema)  # property order matters: it is the order the grammar emits keys in
        if key not in self._grammars:
            import xgrammar as xgr

            if self._grammar_compiler is None:
                info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size,
                                                          stop_token_ids=sorted(self.eos_ids))
                self._grammar_compiler = xgr.GrammarCompiler(info)
            # Compact separators, no free whitespace: exactly the grammar vLLM compiles with
            # ``disable_any_whitespace`` (small models otherwise loop on whitespace).
            self._grammars[key] = self._grammar_compiler.compile_json_schema(key, any_whitespace=False,
                                                                             separators=(",", ":"))
        return self._grammars[key]

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate for every request; per adapter one or more left-padded batches."""
        prepared: list[tuple[GenerationRequest, list[int], Any]] = []
        for i, request in enumerate(requests):
            self._check_adapter(request.adapter, f"request {i}: ")
            grammar = None
            if request.json_schema is not None:
                grammar = self._compile_checked(i, request.json_schema)
            try:
                ids = prompt_ids(self.tokenizer, render_prompt(self.tokenizer, request))
            except UnsupportedRequestError as err:
                raise UnsupportedRequestError(f"request {i}: {err}") from err
            if not ids:
                raise EngineError(f"request {i}: the prompt encodes to no tokens")
            if self.max_model_len is not None and len(ids) >= self.max_model_len:
                raise EngineError(f"request {i}: prompt has {len(ids)} tokens, the context window is "
                                  f"{self.max_model_len} tokens (at least one must remain for the completion)")
            prepared.append((request, ids, grammar))
        results: list[Generation | None] = [None] * len(requests)
        for adapter, indices in self._group_by_adapter([r.adapter for r in requests]).items():
            indices.sort(key=lambda j: -len(prepared[j][1]))
            with self._use_adapter(adapter):
                beams = [j for j in indices if self._beam_searched(prepared[j][0])]
                greedy = [j for j in indices if j not in set(beams)]
                for group, run in ((greedy, self._generate_batch), (beams, self._beam_batch)):
                    for start in range(0, len(group), self.batch_size):
                        batch = group[start:start + self.batch_size]
                        for j, generation in zip(batch, run([prepared[j] for j in batch], batch), strict=True):
                            results[j] = generation
        return results  # type: ignore[return-value]

    def _compile_checked(self, i: int, schema: dict[str, Any]) -> Any:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as err:
            where = "/".join(str(p) for p in err.path) or "(root)"
            raise UnsupportedRequestError(f"request {i}: invalid JSON schema at {where}: {err.message}") from err
        try:
            return self._grammar(schema)
        except Exception as err:  # xgrammar raises RuntimeError / InvalidJSONError for unsupported features
            raise UnsupportedRequestError(f"request {i}: xgrammar cannot compile the JSON schema: {err}") from err

    @staticmethod
    def _group_by_adapter(adapters: Sequence[str | None]) -> dict[str | None, list[int]]:
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, name in enumerate(adapters):
            groups[name].append(i)
        return groups

    def _generate_batch(self, batch: list[tuple[GenerationRequest, list[int], Any]],
                        indices: list[int]) -> list[Generation]:
        matcher_of: Any = None
        if any(grammar is not None for _, _, grammar in batch):
            import xgrammar as xgr  # only JSON-schema requests need it (a GPU image may lack it)

            matcher_of = xgr.GrammarMatcher
        rows = []
        for index, (request, ids, grammar) in zip(indices, batch, strict=True):
            room = self.max_model_len - len(ids) if self.max_model_len is not None else request.max_tokens
            generator = None
            if request.temperature > 0:
                generator = torch.Generator(device=self.device)
                seed = request.seed if request.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
                generator.manual_seed(seed)
            rows.append(_Row(index=index, ids=ids, max_new=min(request.max_tokens, room),
                             max_tokens=request.max_tokens, stop=request.stop, temperature=request.temperature,
                             top_p=request.top_p, generator=generator,
                             matcher=matcher_of(grammar) if grammar is not None else None,
                             allowed=(allowed_token_ids(self.tokenizer, request.allowed_texts, self.eos_ids)
                                      if request.allowed_texts is not None else None)))
        width = max(len(row.ids) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            input_ids[r, width - len(row.ids):] = torch.tensor(row.ids)
            attention[r, width - len(row.ids):] = 1
        config = GenerationConfig(max_new_tokens=max(row.max_new for row in rows), do_sample=False, num_beams=1,
                                  pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids) or None)
        self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                            generation_config=config,
                            logits_processor=LogitsProcessorList([_RowSampler(rows, self.vocab_size)]),
                            stopping_criteria=StoppingCriteriaList([_RowStopper(rows, self.eos_ids, self.tokenizer)]))
        out = []
        for row in rows:
            ended = row.finish == "stop" and row.stop_at is None  # the last token is an end token
            tokens = row.tokens[:-1] if ended else row.tokens
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            if row.stop_at is not None:
                text = text[:row.stop_at]
            else:
                # Cut mid-character (byte-level tokens): drop the incomplete tail, as vLLM's
                # incremental detokenizer never emits it.
                text = text.rstrip("\ufffd")
            out.append(Generation(text=text, finish_reason=row.finish, prompt_tokens=len(row.ids),
                                  completion_tokens=len(row.tokens)))
        return out

    def _beam_searched(self, request: GenerationRequest) -> bool:
        return self.num_beams > 1 and request.temperature == 0 and request.json_schema is None

    def _beam_batch(self, batch: list[tuple[GenerationRequest, list[int], Any]],
                    indices: list[int]) -> list[Generation]:
        """Beam search for a left-padded batch; each row keeps its own allowed tokens, stop strings cut after."""
        width = max(len(ids) for _, ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (_, ids, _) in enumerate(batch):
            input_ids[r, width - len(ids):] = torch.tensor(ids)
            attention[r, width - len(ids):] = 1
        room = min((self.max_model_len - len(ids)) if self.max_model_len else req.max_tokens for req, ids, _ in batch)
        max_new = min(max(req.max_tokens for req, _, _ in batch), room)
        everything = list(range(self.vocab_size))
        allowed = [allowed_token_ids(self.tokenizer, req.allowed_texts, self.eos_ids)
                   if req.allowed_texts is not None else everything for req, _, _ in batch]
        config = GenerationConfig(max_new_tokens=max_new, do_sample=False, num_beams=self.num_beams,
                                  early_stopping=True, pad_token_id=self.pad_id,
                                  eos_token_id=sorted(self.eos_ids) or None)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                      generation_config=config,
                                      logits_processor=LogitsProcessorList([_BeamAllowed(allowed, self.num_beams)]))
        results = []
        for r, (request, ids, _) in enumerate(batch):
            tokens = out[r, width:].tolist()
            ended = next((k for k, t in enumerate(tokens) if t in self.eos_ids or t == self.pad_id), None)
            tokens = tokens[:ended] if ended is not None else tokens[:request.max_tokens]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            finish = "stop" if ended is not None else "length"
            hits = [text.find(s) for s in request.stop if s in text]
            if hits:
                text, finish = text[:min(hits)], "stop"
            results.append(Generation(text=text, finish_reason=finish, prompt_tokens=len(ids),
                                      completion_tokens=len(tokens) + (ended is not None)))
        return results

    # ------------------------------------------------------------------ scoring

    def loglikelihood(self, requests: Sequence[ScoreRequest]) -> list[Score]:
        """Sum and mean log-probability of each continuation's tokens given its context (fp32 math).

        An empty context is read as the BOS token (EOS where the model has none), as lm-eval does,
        so the first continuation token is scored too (the vLLM server backend does the same).
        """
        pairs: list[tuple[list[int], list[int]]] = []
        for i, request in enumerate(requests):
            self._check_adapter(request.adapter, f"request {i}: ")
            ctx, cont = split_pair_ids(self.tokenizer, request.context, request.continuation)
            if not cont:
                raise EngineError(f"request {i}: continuation {request.continuation!r} encodes to no tokens")
            if self.max_model_len is not None and len(ctx) + len(cont) > self.max_model_len:
                raise EngineError(f"request {i}: context ({len(ctx)} tokens) + continuation ({len(cont)} tokens) "
                                  f"= {len(ctx) + len(cont)} tokens exceed the context window of "
                                  f"{self.max_model_len} tokens")
            pairs.append((ctx, cont))
        results: list[Score | None] = [None] * len(requests)
        for adapter, indices in self._group_by_adapter([r.adapter for r in requests]).items():
            indices.sort(key=lambda j: -(len(pairs[j][0]) + len(pairs[j][1])))
            with self._use_adapter(adapter), torch.inference_mode():
                for start in range(0, len(indices), self.batch_size):
                    batch = indices[start:start + self.batch_size]
                    for j, score in zip(batch, self._score_batch([pairs[j] for j in batch]), strict=True):
                        results[j] = score
        return results  # type: ignore[return-value]

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> list[Score]:
        # Left padding with explicit positions puts every continuation at the end of its row, so
        # only the last max(len(cont)) positions need logits (``logits_to_keep``): with a 256k
        # vocabulary the full (batch, length, vocab) tensor would dominate memory.
        seqs = [(ctx + cont)[:-1] for ctx, cont in pairs]
        width = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, seq in enumerate(seqs):
            input_ids[r, width - len(seq):] = torch.tensor(seq)
            attention[r, width - len(seq):] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(cont) for _, cont in pairs)
        kwargs: dict[str, Any] = {"logits_to_keep": keep} if self._keeps_logits else {}
        logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                            position_ids=positions.to(self.device), use_cache=False, **kwargs).logits
        logits = logits[:, -keep:, :]
        out = []
        for r, (_, cont) in enumerate(pairs):
            row = torch.log_softmax(logits[r, keep - len(cont):, :].float(), dim=-1)
            target = torch.tensor(cont, device=row.device).unsqueeze(-1)
            token_lp = row.gather(-1, target).squeeze(-1).double()
            total = float(token_lp.sum())
            out.append(Score(logprob=total, mean_logprob=total / len(cont), n_tokens=len(cont)))
        return out
