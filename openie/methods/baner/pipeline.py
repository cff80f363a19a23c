"""BANER (COLING 2025): boundary-aware LLM span detection, prototype typing and LoRAHub for few-shot NER.

Stage 1, span detection: LoRA SFT with one entity type per prompt (template ``ner.baner.v1``,
answers ``<<< span >>>``), loss = LM loss + lambda * :class:`BoundaryContrastiveLoss` on a middle
layer. Token positions of that term come from the tokenizer's character offsets
(:func:`boundary_positions`), never from hard-coded token ids. Inference restricts decoding to the
input's tokens, the markers and the end token (``GenerationRequest.allowed_texts``: a logits mask
on transformers, with beam search when the engine has ``num_beams``; ``allowed_token_ids`` on
vLLM), and keeps only spans found verbatim in the input.

Stage 2, typing: :class:`PrototypeTyper` gives each detected span the type of the nearest support
prototype (mean span vector of a type; vectors from the LLM's middle layer or GLiNER's encoder).
:func:`lorahub_search` adapts to a target domain by a weighted sum of source adapters' LoRA
matrices, the weights found gradient-free (scipy) on the support set's loss; the result is saved
and registered like any trained adapter.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from openie.engines.base import Engine, GenerationRequest, capabilities
from openie.errors import OpenIEError
from openie.methods.icl import ExtractionStats
from openie.methods.icl.pipeline import record_coverage
from openie.records import Entity, Record
from openie.schema import Schema
from prompts.builder import Prompt, PromptBuilder
from prompts.formats import MarkersFormat, complete_prefix

TEMPLATE = "ner.baner.v1"
NEGATIVE_OFFSETS = (-2, -1, 1, 2)  # relative to the first (negative) and last (positive) entity token


class BoundaryError(OpenIEError, ValueError):
    """A span that no token covers (outside the tokenised text, or truncated away)."""


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    for i, (s, e) in enumerate(offsets):
        if s < e and s <= char < e:
            return i
    raise BoundaryError(f"no token covers character {char}")


@dataclass(frozen=True)
class BoundaryPositions:
    """Token indices of one contrastive term: the type anchor, an entity's edges, the tokens around them."""

    anchor: int
    positives: tuple[int, ...]
    negatives: tuple[int, ...]


def boundary_positions(offsets: Sequence[tuple[int, int]], anchor_span: tuple[int, int],
                       entity_spans: Iterable[tuple[int, int]],
                       negative_offsets: Sequence[int] = NEGATIVE_OFFSETS) -> list[BoundaryPositions]:
    """One :class:`BoundaryPositions` per entity; character spans index the tokenised text.

    Negative offsets below zero count from the entity's first token, the others from its last;
    positions outside the sequence, on special tokens or inside the entity are dropped.
    """
    anchor = _token_at(offsets, anchor_span[1] - 1)
    real = [i for i, (s, e) in enumerate(offsets) if s < e]
    lo, hi = min(real), max(real)
    out = []
    for start, end in entity_spans:
        first, last = _token_at(offsets, start), _token_at(offsets, end - 1)
        negatives = []
        for off in negative_offsets:
            pos = first + off if off < 0 else last + off
            if lo <= pos <= hi and not first <= pos <= last and offsets[pos][0] < offsets[pos][1]:
                negatives.append(pos)
        out.append(BoundaryPositions(anchor, tuple(dict.fromkeys((first, last))), tuple(negatives)))
    return out


def boundary_contrastive_loss(hidden: Any, terms: Sequence[tuple[int, BoundaryPositions]]) -> Any:
    """Mean over ``(batch row, positions)`` of ``-log sigmoid(sum cos(a, p) - sum cos(a, n))``.

    ``hidden`` is ``(batch, tokens, dim)`` from the chosen layer; vectors are compared by cosine
    (L2-normalised, as in the paper). With no term it is a zero that still carries a graph.
    """
    import torch
    import torch.nn.functional as F

    if not terms:
        return hidden.sum() * 0.0
    losses = []
    for row, pos in terms:
        h = F.normalize(hidden[row], dim=-1)
        a = h[pos.anchor]
        score = (h[list(pos.positives)] @ a).sum()
        if pos.negatives:
            score = score - (h[list(pos.negatives)] @ a).sum()
        losses.append(-F.logsigmoid(score))
    return torch.stack(losses).mean()


class BoundaryContrastiveLoss:
    """BANER's auxiliary term for :func:`openie.adapters.training.train_lora` (an ``AuxiliaryLoss``).

    ``spans[i]`` belongs to training pair ``i``: the type name's character span in the prompt and
    the gold entities' character spans in the prompt (None or no entity: no term for that pair).
    """

    def __init__(self, spans: Sequence[tuple[tuple[int, int], Sequence[tuple[int, int]]] | None], *, layer: int,
                 weight: float = 0.001, negative_offsets: Sequence[int] = NEGATIVE_OFFSETS):
        self.spans, self.layer, self.weight = list(spans), layer, weight
        self.negative_offsets = tuple(negative_offsets)
        self.skipped = 0  # entities no token covers (cut by max_length): left out of the term

    def prepare(self, index: int, text: str, ids: list[int], tokenizer: Any) -> list[BoundaryPositions]:
        item = self.spans[index]
        if item is None or not item[1]:
            return []
        enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
        offsets, got = list(enc["offset_mapping"]), list(enc["input_ids"])
        if got != ids:  # prompt_ids drops a doubled BOS: align on the tail
            if len(got) < len(ids) or got[len(got) - len(ids):] != ids:
                raise BoundaryError(f"pair {index}: the offsets' tokens differ from the training tokens")
            offsets = offsets[len(got) - len(ids):]
        out = []
        for span in item[1]:
            try:
                out += boundary_positions(offsets, item[0], [span], self.negative_offsets)
            except BoundaryError:
                self.skipped += 1
        return out

    def __call__(self, hidden: Any, items: list[tuple[Any, int]]) -> Any:
        terms = [(row, BoundaryPositions(p.anchor + pad, tuple(x + pad for x in p.positives),
                                         tuple(x + pad for x in p.negatives)))
                 for row, (positions, pad) in enumerate(items) for p in positions]
        return boundary_contrastive_loss(hidden, terms)

    def describe(self) -> dict[str, Any]:
        return {"name": "boundary_contrastive", "layer": self.layer, "weight": self.weight,
                "negative_offsets": list(self.negative_offsets)}


def prompt_schema(schema: Schema, descriptions: bool) -> Schema:
    """The schema the prompts show: with the types' definitions, or names only."""
    return schema if descriptions else Schema.from_labels(schema.entity_labels)


def span_detection_pairs(records: Iterable[Record], schema: Schema, *, descriptions: bool = False,
                         template: str = TEMPLATE, negative_ratio: float | None = None,
                         seed: int = 0) -> tuple[list[tuple[str, str]], list[Any]]:
    """(prompt, target) pairs, one per record and type, and the contrastive spans of each pair.

    The anchor is the type name's first occurrence in the prompt (the instruction); entity spans
    are the gold entities of the prompt's type, moved to where the input sits in the prompt.
    ``negative_ratio`` keeps at most that many empty-answer pairs per pair with entities (seeded):
    most (record, type) pairs are empty, and a short SFT on all of them learns to answer nothing.
    """
    builder = PromptBuilder(template=template, schema=prompt_schema(schema, descriptions))
    pairs, spans = [], []
    for record in records:
        for prompt in builder.build(record):
            text, label = prompt.text, prompt.label or ""
            base, anchor = text.rfind(record.text), text.find(label)
            if base < 0 or anchor < 0:
                raise BoundaryError(f"record {record.id}: template {template!r} does not show the input and the type")
            entities = [(base + e.start, base + e.end) for e in record.entities if e.label == label]
            pairs.append((text, builder.target(record, prompt)))
            spans.append(((anchor, anchor + len(label)), entities) if entities else None)
    if negative_ratio is not None:
        empty = [i for i, sp in enumerate(spans) if sp is None]
        n_keep = int(negative_ratio * (len(pairs) - len(empty)))
        if len(empty) > n_keep:
            drop = set(random.Random(seed).sample(empty, len(empty) - n_keep))
            keep = [i for i in range(len(pairs)) if i not in drop]
            pairs, spans = [pairs[i] for i in keep], [spans[i] for i in keep]
    return pairs, spans


def default_contrastive_layer(n_layers: int) -> int:
    """The authors' relative depth (layer 24 of 32) on any model: three quarters down."""
    return max(1, round(0.75 * n_layers))


class SpanEncoder(Protocol):
    """Vectors for character spans of texts: one ``(n_i, d)`` array per text."""

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> list[np.ndarray]: ...


@dataclass
class LLMSpanEncoder:
    """A span's vector from a decoder's hidden state at its last token (the same model, a middle layer)."""

    encoder: Any  # openie.tools.ner_retriever.MentionEncoder

    @classmethod
    def load(cls, model: str = "gemma-3-270m", layer: int | None = None, module: str = "") -> LLMSpanEncoder:
        from openie.tools.ner_retriever import MentionEncoder

        return cls(MentionEncoder.load(model, layer=layer, module=module))

    def encode_spans(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> list[np.ndarray]:
        return self.encoder.encode(texts, spans)[0]


class PrototypeTyper:
    """Nearest-prototype typing: a type's prototype is the mean of its support spans' unit vectors."""

    def __init__(self, encoder: Any, prototypes: Mapping[str, np.ndarray]):
        if not prototypes:
            raise BoundaryError("no prototypes: the support set has no entity")
        self.encoder = encoder
        self.labels = sorted(prototypes)
        matrix = np.stack([prototypes[label] for label in self.labels]).astype("float32")
        self.matrix = matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)

    @classmethod
    def fit(cls, encoder: Any, support: Sequence[Record]) -> PrototypeTyper:
        vectors = encoder.encode_spans([r.text for r in support], [[(e.start, e.end) for e in r.entities]
                                                                    for r in support])
        sums: dict[str, list[np.ndarray]] = defaultdict(list)
        for record, rows in zip(support, vectors, strict=True):
            for entity, v in zip(record.entities, rows, strict=True):
                sums[entity.label].append(v / max(float(np.linalg.norm(v)), 1e-12))
        return cls(encoder, {label: np.mean(vs, axis=0) for label, vs in sums.items()})

    def assign(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> list[list[tuple[str, float]]]:
        """(label, cosine) of the nearest prototype for every span."""
        out = []
        for rows in self.encoder.encode_spans(texts, spans):
            if len(rows) == 0:
                out.append([])
                continue
            rows = np.asarray(rows, dtype="float32")
            sims = (rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)) @ self.matrix.T
            best = sims.argmax(axis=1)
            out.append([(self.labels[b], float(sims[i, b])) for i, b in enumerate(best)])
        return out


OPTIONS: dict[str, Any] = {"descriptions": False, "constrained": True, "support": None, "k": 5, "seed": 0,
                           "typing_encoder": "llm", "typing_layer": None, "max_tokens": 48}


def load_span_encoder(spec: str = "llm", *, model: str = "gemma-3-270m", layer: int | None = None) -> Any:
    """``llm``: ``model``'s hidden state at a span's last token (``layer``, default the middle block);
    anything else is a GLiNER checkpoint whose span representations are used."""
    if spec == "llm":
        return LLMSpanEncoder.load(model, layer=layer)
    from openie.tools.gliner import GLiNERTool

    return GLiNERTool.load(spec, show_progress=False)


@dataclass
class BANERExtractor:
    """Stage 1 (one constrained prompt per type, on any engine) and, with a ``typer``, stage 2.

    Without a typer a span keeps the type of the prompt that found it (a span found by several
    prompts is kept once per type); with one, every distinct detected span gets the nearest
    prototype's type. Sits where :class:`~openie.methods.icl.InContextExtractor` sits
    (``extract_batch``, ``stats``, ``task``) for ``openie extract --method baner``.
    """

    engine: Engine
    schema: Schema
    adapter: str | None = None
    descriptions: bool = False
    constrained: bool = True
    typer: PrototypeTyper | None = None
    template: str = TEMPLATE
    max_tokens: int = 48
    batch_size: int = 512
    stats: ExtractionStats = field(default_factory=ExtractionStats)
    task: str = "ner"
    demonstrations: None = None

    @classmethod
    def from_options(cls, engine: Engine, schema: Schema, options: Mapping[str, Any], *, adapter: str | None = None,
                     model: str = "gemma-3-270m", data_root: str | None = None,
                     template: str = TEMPLATE) -> BANERExtractor:
        """``descriptions``, ``constrained``, ``max_tokens``; ``support`` (records file or NAME:SPLIT)
        with ``k`` and ``seed`` samples a K-shot support set for prototype typing with
        ``typing_encoder`` (``llm``: ``model`` at ``typing_layer``; or a GLiNER checkpoint)."""
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise BoundaryError(f"method options: unknown BANER options {unknown}; known: {sorted(OPTIONS)}")
        o = {**OPTIONS, **options}
        typer = None
        if o["support"]:
            from openie.methods.demonstrations import load_pool_sources

            pool = load_pool_sources([str(o["support"])], task="ner", data_root=data_root)
            support = sample_support(pool, schema.entity_labels, int(o["k"]), int(o["seed"]))
            encoder = load_span_encoder(str(o["typing_encoder"]), model=model, layer=o["typing_layer"])
            typer = PrototypeTyper.fit(encoder, support)
        return cls(engine, schema, adapter=adapter, descriptions=_flag(o["descriptions"]),
                   constrained=_flag(o["constrained"]), typer=typer, max_tokens=int(o["max_tokens"]), template=template)

    def describe(self) -> dict[str, Any]:
        return {"descriptions": self.descriptions, "constrained": self.constrained, "template": self.builder.version,
                "typing": "prototype" if self.typer is not None else "prompt",
                "prototypes": {label: np.round(v, 5).tolist() for label, v in
                               zip(self.typer.labels, self.typer.matrix, strict=True)} if self.typer else None}

    def extract_batch(self, batch: Sequence[Record]) -> list[Record]:
        return self.extract(batch, progress=False)

    def __post_init__(self) -> None:
        self.builder = PromptBuilder(template=self.template, schema=prompt_schema(self.schema, self.descriptions))
        if self.builder.format.name != "markers":
            raise BoundaryError(f"template {self.template!r} must use the markers format")
        if self.constrained and not capabilities(self.engine).allowed_texts:
            raise BoundaryError(f"method option constrained: BANER restricts decoding to the input's tokens "
                                f"(allowed_texts), and the engine {getattr(self.engine, 'model_id', self.engine)!r} "
                                "cannot (an OpenAI-compatible endpoint has no such request field): use the vllm, "
                                "vllm-server or hf backend, or constrained=false")

    def requests(self, record: Record) -> tuple[list[Prompt], list[GenerationRequest]]:
        prompts = self.builder.build(record)
        allowed = (record.text, f"{MarkersFormat.OPEN} {MarkersFormat.CLOSE}") if self.constrained else None
        return prompts, [GenerationRequest(prompt=p.text, adapter=self.adapter, max_tokens=self.max_tokens,
                                           stop=("\n",), template=p.template, allowed_texts=allowed)
                         for p in prompts]

    def extract(self, records: Sequence[Record], *, progress: bool = True) -> list[Record]:
        out: list[Record] = []
        bar = tqdm(total=len(records), desc="BANER", unit="rec", disable=not progress)
        for start in range(0, len(records), max(1, self.batch_size // max(1, len(self.schema.entity_labels)))):
            chunk = records[start:start + max(1, self.batch_size // max(1, len(self.schema.entity_labels)))]
            built = [self.requests(r) for r in chunk]
            generations = self.engine.generate([q for _, qs in built for q in qs])
            texts = [complete_prefix(g.text, "markers") if g.finish_reason == "length" else g.text for g in generations]
            self.stats.prompts += len(generations)
            self.stats.prompt_tokens += sum(g.prompt_tokens for g in generations)
            self.stats.completion_tokens += sum(g.completion_tokens for g in generations)
            at = 0
            for record, (prompts, _) in zip(chunk, built, strict=True):
                answers, gens, at = texts[at:at + len(prompts)], generations[at:at + len(prompts)], at + len(prompts)
                pred = self.builder.parse_record(record, prompts, answers)
                cut = sum(g.finish_reason == "length" for g in gens)
                pred.meta["cut_at_max_tokens"] = cut
                pred.meta["coverage"] = record_coverage(  # one prompt per type, each with the whole sentence
                    record, [None], {"prompts": len(prompts), "cut_at_max_tokens": cut, "salvaged": cut, "retried": 0,
                                     "labels_per_prompt": 1, "prompt_tokens": sum(g.prompt_tokens for g in gens)},
                    pred.meta.get("alignment", {}).get("not_found", 0))
                pred.meta["detected"] = [[e.start, e.end, e.label] for e in pred.entities]
                pred.meta["adapter"] = self.adapter
                out.append(pred)
            bar.update(len(chunk))
        bar.close()
        if self.typer is not None:
            self.retype(out)
        for pred in out:
            self.stats.add(pred)
        return out

    def retype(self, preds: list[Record]) -> None:
        """Give every distinct detected span of each prediction its nearest prototype's type (in place)."""
        spans = [sorted({(e.start, e.end) for e in p.entities}) for p in preds]
        for pred, found, labels in zip(preds, spans, self.typer.assign([p.text for p in preds], spans), strict=True):
            pred.entities = sorted(Entity(s, e, label, pred.text[s:e], score=round(sim, 4))
                                   for (s, e), (label, sim) in zip(found, labels, strict=True))


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


# ---------------------------------------------------------------- few-shot episodes


def sample_support(records: Sequence[Record], labels: Sequence[str], k: int, seed: int = 0) -> list[Record]:
    """Greedy K-shot sampling (Yang and Katiyar, 2020): add a sentence while it brings a type still
    short of ``k`` mentions, until every type has ``k`` (or the pool runs out); seeded."""
    if k < 1:
        raise BoundaryError(f"k must be at least 1, got {k}")
    order = list(records)
    random.Random(seed).shuffle(order)
    counts = dict.fromkeys(labels, 0)
    support = []
    for record in order:
        mine = Counter(e.label for e in record.entities if e.label in counts)
        if mine and any(counts[label] < k for label in mine):
            support.append(record)
            for label, n in mine.items():
                counts[label] += n
        if all(c >= k for c in counts.values()):
            break
    return support


# ---------------------------------------------------------------- LoRAHub


def _lora_tensors(path: str | Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    weights = Path(path) / "adapter_model.safetensors"
    if not weights.is_file():
        raise BoundaryError(f"{path}: no adapter_model.safetensors")
    return load_file(str(weights))


def lorahub_pairs(pairs: Sequence[tuple[str, str]], max_pairs: int | None, seed: int = 0) -> list[tuple[str, str]]:
    """At most ``max_pairs`` support pairs for the search (every loss evaluation scores all of them):
    pairs with entities first, then empty answers, each group in a seeded order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return list(pairs)
    rng = random.Random(seed)
    full = [p for p in pairs if p[1].strip()]
    empty = [p for p in pairs if not p[1].strip()]
    rng.shuffle(full)
    rng.shuffle(empty)
    return (full + empty)[:max_pairs]


def lorahub_merge(sources: Sequence[str | Path], weights: Sequence[float]) -> dict[str, Any]:
    """LoRAHub's composition: A = sum w_i A_i and B = sum w_i B_i over the source adapters.

    All sources must share rank, target modules and base model (their tensors must align).
    """
    if len(sources) != len(weights) or not sources:
        raise BoundaryError(f"{len(sources)} sources but {len(weights)} weights")
    tensors = [_lora_tensors(p) for p in sources]
    keys = set(tensors[0])
    for path, t in zip(sources[1:], tensors[1:], strict=True):
        if set(t) != keys or any(t[k].shape != tensors[0][k].shape for k in keys):
            raise BoundaryError(f"{path}: its LoRA tensors differ in names or shapes from {sources[0]}")
    return {k: sum(float(w) * t[k].float() for w, t in zip(weights, tensors, strict=True)) for k in sorted(keys)}


def save_merged_adapter(sources: Sequence[str | Path], weights: Sequence[float], output_dir: str | Path) -> Path:
    """Write :func:`lorahub_merge` of ``sources`` as a peft adapter folder (the first source's config)."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in lorahub_merge(sources, weights).items()},
              str(output_dir / "adapter_model.safetensors"))
    (output_dir / "adapter_config.json").write_text((Path(sources[0]) / "adapter_config.json").read_text())
    return output_dir


@dataclass
class LoRAHubResult:
    path: Path
    weights: list[float]
    loss: float                     # support loss of the merged adapter (without the L1 term)
    uniform_loss: float             # the same with equal weights (the search's start)
    history: list[dict[str, Any]] = field(default_factory=list)
    adapter: Any = None             # AdapterInfo when registered


def lorahub_search(base_model: str | Path, sources: Sequence[str | Path], pairs: Sequence[tuple[str, str]],
                   output_dir: str | Path, *, budget: int = 40, l1: float = 0.05, bounds: float = 1.5,
                   batch_size: int = 8, seed: int = 0, registry: Any = None, name: str | None = None,
                   progress: bool = True) -> LoRAHubResult:
    """Find source weights minimising support-set loss + ``l1 * sum |w|`` (LoRAHub's objective) with a
    gradient-free search (scipy Powell within +-``bounds``, at most ``budget`` loss evaluations),
    save the merged adapter in ``output_dir`` (peft files) and register it when ``registry`` is given.
    """
    import torch
    from peft import PeftModel
    from scipy.optimize import minimize

    from openie.adapters.registry import AdapterRegistry
    from openie.adapters.training import pairs_loss
    from openie.models import load_causal_lm, load_tokenizer

    if not pairs:
        raise BoundaryError("LoRAHub needs support pairs to score the merge on")
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(base_model)
    model = PeftModel.from_pretrained(load_causal_lm(base_model), str(sources[0])).eval()
    params = dict(model.named_parameters())
    tensors = [_lora_tensors(p) for p in sources]
    targets = {}
    for key in tensors[0]:
        param_name = key.replace(".weight", ".default.weight")
        if param_name not in params:
            raise BoundaryError(f"{sources[0]}: tensor {key} has no parameter {param_name} in the loaded model")
        targets[key] = params[param_name]
    history: list[dict[str, Any]] = []
    bar = tqdm(total=budget, desc="LoRAHub", unit="eval", disable=not progress)

    def loss_of(w: Sequence[float]) -> float:
        with torch.no_grad():
            for key, param in targets.items():
                param.copy_(sum(float(x) * t[key] for x, t in zip(w, tensors, strict=True)).to(param.dtype))
        value = pairs_loss(model, tokenizer, pairs, batch_size=batch_size)
        history.append({"weights": [round(float(x), 4) for x in w], "loss": value})
        bar.update(1)
        return value

    def objective(w: np.ndarray) -> float:
        return loss_of(w) + l1 * float(np.abs(w).sum())

    start = np.full(len(sources), 1.0 / len(sources))
    uniform = loss_of(start)
    found = minimize(objective, start, method="Powell", bounds=[(-bounds, bounds)] * len(sources),
                     options={"maxfev": max(1, budget - 1), "xtol": 1e-2, "ftol": 1e-3})
    bar.close()
    best = min(history, key=lambda h: h["loss"] + l1 * sum(abs(x) for x in h["weights"]))
    weights = best["weights"]
    output_dir = save_merged_adapter(sources, weights, output_dir)
    meta = {"sources": [str(p) for p in sources], "weights": weights, "loss": best["loss"], "uniform_loss": uniform,
            "budget": budget, "l1": l1, "bounds": bounds, "n_pairs": len(pairs), "evaluations": len(history),
            "scipy_message": str(found.message)}
    (output_dir / "openie_lorahub.json").write_text(json.dumps({**meta, "history": history}, indent=2) + "\n")
    result = LoRAHubResult(output_dir, weights, best["loss"], uniform, history)
    if registry is not None:
        reg = registry if isinstance(registry, AdapterRegistry) else AdapterRegistry(registry)
        result.adapter = reg.register(output_dir, name or output_dir.name, base_model=str(base_model), task="ner",
                                      training={"lorahub": meta}, metrics={"support_loss": best["loss"]},
                                      overwrite=True)
    return result


__all__ = ["NEGATIVE_OFFSETS", "OPTIONS", "TEMPLATE", "BANERExtractor", "BoundaryContrastiveLoss", "BoundaryError",
           "BoundaryPositions", "LLMSpanEncoder", "LoRAHubResult", "PrototypeTyper", "SpanEncoder",
           "boundary_contrastive_loss", "boundary_positions", "default_contrastive_layer", "lorahub_merge",
           "load_span_encoder", "lorahub_pairs", "lorahub_search", "prompt_schema", "sample_support",
           "save_merged_adapter", "span_detection_pairs"]
