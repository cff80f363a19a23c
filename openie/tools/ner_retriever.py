"""NER Retriever (arXiv 2509.04011): find documents mentioning entities of a type described in plain words.

The pipeline, one piece per class:

1. :class:`MentionEncoder`: a frozen decoder LLM read at one internal point (a layer's
   sub-module output, captured by a forward hook; the authors use the value projection of a
   middle layer) at the *last token* of each mention. The model is causal, so that vector only
   depends on the text up to the mention: one forward pass per text serves all its mentions. A
   type description is embedded the same way (its last token).
2. :class:`MentionProjector`: a small MLP (authors: 1024->500->500, SiLU, dropout 0.1) trained by
   :func:`train_projector` with a triplet loss: anchor = a type description, positive = a mention
   of that type, negative = a mention of another type.
3. :class:`MentionIndex`: L2-normalised projected mention vectors in a faiss inner-product index
   with their document ids. Mentions come from a pluggable detector (:class:`GoldMentions`,
   :class:`GLiNERMentions`, :class:`LLMMentions`).
4. :meth:`MentionIndex.search`: description -> top ``4k`` vectors -> documents (best mention
   each) -> top ``k``. Scored by R-precision per type, macro-averaged (:func:`type_relevance`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm.auto import tqdm

from openie.errors import OpenIEError
from openie.records import Record

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_MODULE = "self_attn.v_proj"
DESCRIPTION_TEMPLATE = "{description}"


class NERRetrieverError(OpenIEError, ValueError):
    """A hook point, training set or index that cannot be used as given."""


# ---------------------------------------------------------------------------------------------
# 1. mid-layer mention vectors
# ---------------------------------------------------------------------------------------------


def decoder_layers(model: Any) -> Any:
    """The decoder's list of transformer blocks (``model.model.layers`` on Llama, Qwen, Gemma, ...)."""
    import torch

    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    for name in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers", "layers"):
        obj = model
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, torch.nn.ModuleList) and (n is None or len(obj) == n):
            return obj
    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and (n is None or len(m) == n)]
    if not lists:
        raise NERRetrieverError(f"cannot find the decoder layers of {type(model).__name__}")
    return lists[0]


@dataclass(frozen=True)
class HookPoint:
    """Where a vector is read: block ``layer`` (negative counts from the end), its sub-module ``module``.

    ``module`` is a dotted path inside the block (``self_attn.v_proj``, ``mlp.down_proj``,
    ``self_attn.o_proj``); ``""`` reads the block's output (the residual stream).
    """

    layer: int
    module: str = DEFAULT_MODULE

    def resolve(self, model: Any) -> Any:
        layers = decoder_layers(model)
        if not -len(layers) <= self.layer < len(layers):
            raise NERRetrieverError(f"layer {self.layer} does not exist: the model has {len(layers)} layers")
        block = layers[self.layer]
        if not self.module:
            return block
        try:
            return block.get_submodule(self.module)
        except AttributeError:
            names = sorted(n for n, _ in block.named_modules() if n)
            raise NERRetrieverError(f"layer {self.layer} has no sub-module {self.module!r}; it has: "
                                    f"{', '.join(names)}") from None

    def describe(self) -> str:
        return f"layers[{self.layer}]" + (f".{self.module}" if self.module else "")


class _StopForward(Exception):
    """Raised by a hook once every wanted vector of a forward pass is captured."""


class MentionEncoder:
    """Vectors of a frozen decoder at chosen hook points, at the last token of character spans.

    Several hook points are read in the same forward pass (a layer sweep costs one pass).
    Texts longer than ``max_length`` tokens are read in windows that each keep ``max_length``
    tokens of left context before the mentions they serve.
    """

    def __init__(self, model: Any, tokenizer: Any, hooks: Sequence[HookPoint] | HookPoint, *, model_id: str = "",
                 batch_size: int = 16, max_length: int = 512, show_progress: bool = True):
        self.model, self.tokenizer = model.eval(), tokenizer
        self.hooks = [hooks] if isinstance(hooks, HookPoint) else list(hooks)
        if not self.hooks:
            raise NERRetrieverError("give at least one hook point")
        self._modules = [h.resolve(model) for h in self.hooks]
        self.model_id = model_id or getattr(getattr(model, "config", None), "_name_or_path", "")
        self.batch_size, self.max_length, self.show_progress = batch_size, max_length, show_progress
        if not getattr(tokenizer, "is_fast", False):
            raise NERRetrieverError("MentionEncoder needs a fast tokenizer (character offsets)")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"  # left padding would shift the positions of a causal model

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_MODEL, *, layer: int | Sequence[int] | None = None,
             module: str = DEFAULT_MODULE, dtype: str = "float32", device: str | None = None,
             **options: Any) -> MentionEncoder:
        """A default model's short name, a local folder or a hub id; ``layer`` defaults to the middle block."""
        from openie.models import load_causal_lm, load_tokenizer, resolve_model

        model = load_causal_lm(name_or_path, dtype=dtype, device=device)
        tokenizer = load_tokenizer(name_or_path)
        n = len(decoder_layers(model))
        layers = [n // 2] if layer is None else [layer] if isinstance(layer, int) else list(layer)
        return cls(model, tokenizer, [HookPoint(i, module) for i in layers], model_id=resolve_model(name_or_path),
                   **options)

    @property
    def dims(self) -> list[int]:
        """Width of each hook point's vectors (read from one tiny pass)."""
        if not hasattr(self, "_dims"):
            out = self.encode(["a b"], [[(0, 1)]])
            self._dims = [int(o[0].shape[1]) for o in out]
        return self._dims

    def fingerprint(self) -> str:
        """Every weight plus the hook points: part of every cache key of these vectors (computed once)."""
        if getattr(self, "_fingerprint", None) is None:
            h = hashlib.sha256(json.dumps([self.model_id, [asdict(p) for p in self.hooks], self.max_length]).encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                h.update(name.encode())
                h.update(tensor.detach().float().cpu().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def _token_index(self, offsets: Sequence[tuple[int, int]], end: int) -> int:
        """The token holding character ``end - 1`` (the mention's last character)."""
        target = end - 1
        best = -1
        for i, (s, e) in enumerate(offsets):
            if s == e:
                continue
            if s <= target < e:
                return i
            if e <= target:
                best = i
        if best < 0:
            raise NERRetrieverError(f"no token covers character {target}")
        return best

    def encode(self, texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> list[list[np.ndarray]]:
        """``out[h][i]``: an ``(n_i, d_h)`` array of hook point ``h``'s vectors for text ``i``'s spans."""
        import torch

        if len(texts) != len(spans):
            raise NERRetrieverError(f"{len(texts)} texts but {len(spans)} span lists")
        # one job per (text, window): a window is the text up to a cut, read with its left context
        jobs: list[tuple[int, str, int, list[tuple[int, int, int]]]] = []  # (text idx, text, offset, [(slot, s, e)])
        for i, (text, wanted) in enumerate(zip(texts, spans, strict=True)):
            for s, e in wanted:
                if not 0 <= s < e <= len(text):
                    raise NERRetrieverError(f"text {i}: span ({s}, {e}) is outside the text (length {len(text)})")
            jobs += self._windows(i, text, wanted)
        out = [[np.zeros((len(w), 0), np.float32) for w in spans] for _ in self.hooks]
        filled: list[list[dict[int, np.ndarray]]] = [[{} for _ in spans] for _ in self.hooks]
        captured: list[Any] = [None] * len(self.hooks)

        def grab(h: int) -> Callable[..., None]:
            def hook(_module: Any, _inputs: Any, output: Any) -> None:
                captured[h] = output[0] if isinstance(output, tuple) else output
            return hook

        handles = [m.register_forward_hook(grab(h)) for h, m in enumerate(self._modules)]
        # nothing past the deepest hooked block is needed: stop the pass there (no later layers, no LM head,
        # which for a 262k-token vocabulary costs more than the whole 270M body)
        layers = decoder_layers(self.model)
        deepest = max(h.layer % len(layers) for h in self.hooks)

        def stop(_module: Any, _inputs: Any, _output: Any) -> None:
            raise _StopForward

        handles.append(layers[deepest].register_forward_hook(stop))
        body = self.model.get_decoder() if hasattr(self.model, "get_decoder") else self.model
        order = sorted(range(len(jobs)), key=lambda j: len(jobs[j][1]))  # similar lengths share a batch
        bar = tqdm(total=len(jobs), desc="mention vectors", unit="text",
                   disable=not self.show_progress or len(jobs) < 4 * self.batch_size, leave=False)
        device = next(self.model.parameters()).device
        try:
            with torch.inference_mode():
                for b in range(0, len(order), self.batch_size):
                    batch = [jobs[j] for j in order[b:b + self.batch_size]]
                    enc = self.tokenizer([t for _, t, _, _ in batch], return_offsets_mapping=True, padding=True,
                                         truncation=True, max_length=self.max_length, return_tensors="pt")
                    offsets = enc.pop("offset_mapping").tolist()
                    try:
                        body(**{k: v.to(device) for k, v in enc.items()})
                    except _StopForward:
                        pass
                    for row, (i, _, shift, slots) in enumerate(batch):
                        for slot, _s, e in slots:
                            t = self._token_index(offsets[row], e - shift)
                            for h in range(len(self.hooks)):
                                filled[h][i][slot] = captured[h][row, t].float().cpu().numpy()
                    bar.update(len(batch))
        finally:
            for handle in handles:
                handle.remove()
            bar.close()
        for h in range(len(self.hooks)):
            for i, wanted in enumerate(spans):
                if wanted:
                    out[h][i] = np.stack([filled[h][i][slot] for slot in range(len(wanted))]).astype(np.float32)
        for h in range(len(self.hooks)):  # empty span lists get the right width
            width = next((v.shape[1] for v in out[h] if v.size), 0)
            out[h] = [v if v.size else np.zeros((0, width), np.float32) for v in out[h]]
        return out

    def _windows(self, i: int, text: str, wanted: Sequence[tuple[int, int]]) -> list[tuple[int, str, int, list]]:
        """Cut a text so every mention's last token lies within ``max_length`` tokens of its window start."""
        slots = sorted(((slot, s, e) for slot, (s, e) in enumerate(wanted)), key=lambda x: x[2])
        if not slots:
            return []
        n_tokens = len(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        if n_tokens <= self.max_length:
            return [(i, text, 0, slots)]
        # long text: windows ending at successive mention ends, each starting far enough back
        chars_per_token = max(1.0, len(text) / n_tokens)
        reach = int(self.max_length * chars_per_token * 0.8)
        windows: list[tuple[int, str, int, list]] = []
        group: list[tuple[int, int, int]] = []
        start = 0
        for slot in slots:
            if group and slot[2] - start > reach:
                end = group[-1][2]
                windows.append((i, text[start:end], start, group))
                group = []
            if not group:
                start = max(0, slot[2] - reach // 2)
                while start > 0 and not text[start - 1].isspace():
                    start -= 1
            group.append(slot)
        windows.append((i, text[start:group[-1][2]], start, group))
        return windows

    def encode_texts(self, texts: Sequence[str], template: str = DESCRIPTION_TEMPLATE) -> list[np.ndarray]:
        """A vector per text at its last token (type descriptions), one ``(n, d_h)`` array per hook point."""
        filled = [template.format(description=t).strip() for t in texts]
        out = self.encode(filled, [[(0, len(t))] for t in filled])
        return [np.concatenate(per_h, axis=0) if per_h else np.zeros((0, 0), np.float32) for per_h in out]


# ---------------------------------------------------------------------------------------------
# 2. the projection and its triplet training
# ---------------------------------------------------------------------------------------------


def scaled_width(input_dim: int) -> int:
    """The authors' 500-wide MLP for 1024-d inputs, scaled to another input width (at least 64)."""
    return max(64, round(input_dim * 500 / 1024))


def build_projector(input_dim: int, hidden_dim: int | None = None, output_dim: int | None = None,
                    dropout: float = 0.1) -> Any:
    """Linear(d, h) - SiLU - Dropout - Linear(h, o), as in the paper."""
    import torch

    hidden_dim = hidden_dim or scaled_width(input_dim)
    output_dim = output_dim or hidden_dim
    return torch.nn.Sequential(torch.nn.Linear(input_dim, hidden_dim), torch.nn.SiLU(), torch.nn.Dropout(dropout),
                               torch.nn.Linear(hidden_dim, output_dim))


@dataclass
class ProjectorConfig:
    """Everything that changes a trained projector (saved beside its weights)."""

    hidden_dim: int | None = None
    output_dim: int | None = None
    dropout: float = 0.1
    margin: float = 0.3
    steps: int = 2000
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 250


def triplet_loss(anchor: Any, positive: Any, negative: Any, margin: float) -> Any:
    """``max(0, margin - cos(a, p) + cos(a, n))``, averaged: mentions closer to their own type's description."""
    import torch.nn.functional as F

    pos = F.cosine_similarity(anchor, positive, dim=-1)
    neg = F.cosine_similarity(anchor, negative, dim=-1)
    return F.relu(margin - pos + neg).mean()


@dataclass
class TripletData:
    """Mention vectors with their types, and one description vector per type (the anchors)."""

    mentions: np.ndarray  # (n, d)
    types: list[str]
    anchors: dict[str, np.ndarray]  # type -> (d,)

    def __post_init__(self) -> None:
        missing = sorted(set(self.types) - set(self.anchors))
        if missing:
            raise NERRetrieverError(f"types without a description vector: {missing}")
        if len(set(self.types)) < 2:
            raise NERRetrieverError("triplets need mentions of at least two types (negatives are other types)")


def train_projector(data: TripletData, config: ProjectorConfig, output_dir: str | Path | None = None, *,
                    show_progress: bool = True) -> tuple[Any, list[float]]:
    """Train the MLP on random triplets; checkpoints every ``checkpoint_every`` steps and resumes from them.

    Each step samples ``batch_size`` mentions (types balanced: a type first, then one of its
    mentions); the anchor is that type's description, the negative a mention of another type.
    Returns the projector (eval mode) and the loss per step.
    """
    import torch

    input_dim = data.mentions.shape[1]
    torch.manual_seed(config.seed)
    model = build_projector(input_dim, config.hidden_dim, config.output_dim, config.dropout)
    optim = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    losses: list[float] = []
    start = 0
    ckpt = Path(output_dir) / "projector.ckpt" if output_dir is not None else None
    recipe = {"config": asdict(config), "input_dim": input_dim, "mentions": len(data.types)}
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        if state["recipe"] != recipe:
            raise NERRetrieverError(f"{ckpt} was trained with another config or data; remove it to start afresh")
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        losses, start = state["losses"], state["step"]
        torch.set_rng_state(state["torch_rng"])
    by_type: dict[str, np.ndarray] = {}
    for t in sorted(set(data.types)):
        by_type[t] = np.array([i for i, x in enumerate(data.types) if x == t])
    type_names = sorted(by_type)
    mentions = torch.from_numpy(np.ascontiguousarray(data.mentions, dtype=np.float32))
    anchors = torch.from_numpy(np.stack([data.anchors[t] for t in type_names]).astype(np.float32))
    model.train()
    bar = tqdm(total=config.steps, initial=start, desc="projector", unit="step", disable=not show_progress)
    for step in range(start, config.steps):
        rng = np.random.default_rng((config.seed, step))  # a resumed run draws the same triplets
        t_idx = rng.integers(len(type_names), size=config.batch_size)
        pos = np.array([rng.choice(by_type[type_names[t]]) for t in t_idx])
        other = (t_idx + rng.integers(1, len(type_names), size=config.batch_size)) % len(type_names)
        neg = np.array([rng.choice(by_type[type_names[t]]) for t in other])
        a = model(anchors[torch.from_numpy(t_idx)])
        loss = triplet_loss(a, model(mentions[torch.from_numpy(pos)]), model(mentions[torch.from_numpy(neg)]),
                            config.margin)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
        bar.update(1)
        if ckpt is not None and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"recipe": recipe, "model": model.state_dict(), "optim": optim.state_dict(), "losses": losses,
                        "step": step + 1, "torch_rng": torch.get_rng_state()}, tmp)
            tmp.replace(ckpt)
    bar.close()
    return model.eval(), losses


class MentionProjector:
    """A trained MLP (or the identity: the raw layer vector) from hook vectors to the index space."""

    def __init__(self, mlp: Any | None = None, meta: Mapping[str, Any] | None = None):
        self.mlp = mlp
        self.meta = dict(meta or {})

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        if self.mlp is None:
            return np.asarray(vectors, dtype=np.float32)
        import torch

        with torch.inference_mode():
            return self.mlp(torch.from_numpy(np.asarray(vectors, dtype=np.float32))).numpy()

    def save(self, path: str | Path) -> Path:
        import torch

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.mlp is not None:
            torch.save(self.mlp.state_dict(), path / "projector.pt")
        (path / "projector.json").write_text(json.dumps({**self.meta, "identity": self.mlp is None}, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MentionProjector:
        import torch

        path = Path(path)
        meta = json.loads((path / "projector.json").read_text())
        if meta.get("identity"):
            return cls(None, meta)
        cfg = meta["config"]
        mlp = build_projector(meta["input_dim"], cfg["hidden_dim"], cfg["output_dim"], cfg["dropout"])
        mlp.load_state_dict(torch.load(path / "projector.pt", weights_only=True))
        return cls(mlp.eval(), meta)


# ---------------------------------------------------------------------------------------------
# 3. mention detectors
# ---------------------------------------------------------------------------------------------


class MentionDetector(Protocol):
    """Type-agnostic mention spans for each text (character offsets)."""

    name: str

    def detect(self, records: Sequence[Record]) -> list[list[tuple[int, int]]]: ...


class GoldMentions:
    """The annotated entity spans (an upper bound on detection)."""

    name = "gold"

    def detect(self, records: Sequence[Record]) -> list[list[tuple[int, int]]]:
        return [sorted({e.span for e in r.entities}) for r in records]


class GLiNERMentions:
    """Spans proposed by the GLiNER tool with generic prompts (``entity`` by default)."""

    def __init__(self, tool: Any, labels: Sequence[str] = ("entity",), threshold: float = 0.3):
        self.tool, self.labels, self.threshold = tool, list(labels), threshold
        self.name = f"gliner:{'|'.join(self.labels)}@{threshold}"

    def detect(self, records: Sequence[Record]) -> list[list[tuple[int, int]]]:
        found = self.tool.propose_spans([r.text for r in records], self.labels, threshold=self.threshold)
        return [sorted({e.span for e in ents}) for ents in found]


class LLMMentions:
    """Spans an LLM lists for a generic "named entities" prompt, grounded to the text.

    ``engine`` is any openie :class:`~openie.engines.base.Engine`; the answer is one mention per
    line and every line is located in the input (spans not found are dropped).
    """

    PROMPT = ("List every named entity (names of people, places, organizations, works, products, methods, "
              "events and other proper names) in the text, one per line.\n\nText: {text}\nEntities:\n")

    def __init__(self, engine: Any, prompt: str | None = None, max_tokens: int = 96, batch_size: int = 16):
        self.engine, self.prompt, self.max_tokens, self.batch_size = engine, prompt or self.PROMPT, max_tokens, batch_size
        self.name = f"llm:{getattr(engine, 'model_id', '?')}"

    def detect(self, records: Sequence[Record]) -> list[list[tuple[int, int]]]:
        from openie.engines.base import GenerationRequest
        from openie.grounding import ground

        out = []
        for b in range(0, len(records), self.batch_size):
            batch = records[b:b + self.batch_size]
            gens = self.engine.generate([GenerationRequest(prompt=self.prompt.format(text=r.text),
                                                           max_tokens=self.max_tokens, stop=("\n\n",))
                                         for r in batch])
            for r, g in zip(batch, gens, strict=True):
                spans: set[tuple[int, int]] = set()
                for line in g.text.splitlines():
                    mention = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip().strip('"')
                    if not mention or len(mention) > 100:
                        continue
                    found = ground(r.text, mention, taken=spans)
                    if found.found:
                        spans.add((found.start, found.end))
                out.append(sorted(spans))
        return out


# ---------------------------------------------------------------------------------------------
# 4. the index
# ---------------------------------------------------------------------------------------------


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class TypeHit:
    """A retrieved document, scored by its best mention."""

    doc_id: str
    score: float
    mention: tuple[int, int]


@dataclass
class MentionIndex:
    """Projected, L2-normalised mention vectors in faiss (inner product), each with its document and span."""

    index: Any
    doc_ids: list[str]
    spans: list[tuple[int, int]]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, vectors: Iterable[tuple[str, tuple[int, int], np.ndarray]] | None = None, dim: int | None = None,
              meta: Mapping[str, Any] | None = None) -> MentionIndex:
        import faiss

        items = list(vectors or [])
        if dim is None:
            if not items:
                raise NERRetrieverError("an empty index needs its dimension")
            dim = int(items[0][2].shape[-1])
        idx = cls(faiss.IndexFlatIP(dim), [], [], dict(meta or {}))
        if items:
            idx.add([d for d, _, _ in items], [s for _, s, _ in items], np.stack([v for _, _, v in items]))
        return idx

    def add(self, doc_ids: Sequence[str], spans: Sequence[tuple[int, int]], vectors: np.ndarray) -> None:
        if len(doc_ids) != len(vectors) or len(spans) != len(vectors):
            raise NERRetrieverError(f"{len(doc_ids)} ids, {len(spans)} spans but {len(vectors)} vectors")
        if len(vectors):
            self.index.add(_normalise(vectors))
            self.doc_ids += list(doc_ids)
            self.spans += [tuple(s) for s in spans]

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def documents(self) -> set[str]:
        return set(self.doc_ids)

    def search_vector(self, query: np.ndarray, k: int, candidates_factor: int = 4) -> list[TypeHit]:
        """Top ``candidates_factor * k`` mentions, de-duplicated to documents (best mention), top ``k``."""
        if len(self) == 0 or k < 1:
            return []
        q = _normalise(np.asarray(query, dtype=np.float32).reshape(1, -1))
        scores, ids = self.index.search(q, min(len(self), candidates_factor * k))
        hits: dict[str, TypeHit] = {}
        for s, i in zip(scores[0], ids[0], strict=True):
            if i < 0:
                continue
            doc = self.doc_ids[i]
            if doc not in hits:
                hits[doc] = TypeHit(doc, float(s), self.spans[i])
            if len(hits) == k:
                break
        return list(hits.values())

    def save(self, path: str | Path) -> Path:
        import faiss

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(path / "mentions.faiss"))
        (path / "mentions.json").write_text(json.dumps(
            {"meta": self.meta, "doc_ids": self.doc_ids, "spans": [list(s) for s in self.spans]}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> MentionIndex:
        import faiss

        path = Path(path)
        if not (path / "mentions.faiss").is_file():
            raise NERRetrieverError(f"{path} holds no mention index (mentions.faiss)")
        data = json.loads((path / "mentions.json").read_text())
        index = faiss.read_index(str(path / "mentions.faiss"))
        if index.ntotal != len(data["doc_ids"]):
            raise NERRetrieverError(f"{path}: {index.ntotal} vectors but {len(data['doc_ids'])} document ids")
        return cls(index, data["doc_ids"], [tuple(s) for s in data["spans"]], data["meta"])


class NERRetriever:
    """Encoder + projector + index: index documents' mentions, then query by a type description."""

    def __init__(self, encoder: MentionEncoder, projector: MentionProjector | None = None,
                 index: MentionIndex | None = None, *, description_template: str = DESCRIPTION_TEMPLATE,
                 candidates_factor: int = 4, show_progress: bool = True):
        if len(encoder.hooks) != 1:
            raise NERRetrieverError(f"a retriever reads one hook point, the encoder has {len(encoder.hooks)}")
        self.encoder, self.projector = encoder, projector or MentionProjector()
        self.index = index
        self.description_template = description_template
        self.candidates_factor = candidates_factor
        self.show_progress = show_progress

    def embed_mentions(self, records: Sequence[Record], spans: Sequence[Sequence[tuple[int, int]]]) -> list[np.ndarray]:
        return [self.projector(v) if len(v) else v for v in self.encoder.encode([r.text for r in records], spans)[0]]

    def embed_descriptions(self, descriptions: Sequence[str]) -> np.ndarray:
        return self.projector(self.encoder.encode_texts(descriptions, self.description_template)[0])

    def index_records(self, records: Sequence[Record], detector: MentionDetector, *, batch_size: int = 256) -> MentionIndex:
        """Detect mentions and add their vectors, ``batch_size`` records at a time (progress bar)."""
        meta = {"encoder": self.encoder.model_id, "hook": self.encoder.hooks[0].describe(),
                "detector": detector.name, "projector": self.projector.meta.get("fingerprint", "identity")}
        if self.index is None:
            dim = self.embed_descriptions(["thing"]).shape[1]
            self.index = MentionIndex.build(dim=dim, meta=meta)
        bar = tqdm(total=len(records), desc=f"index ({detector.name})", unit="doc", disable=not self.show_progress)
        for b in range(0, len(records), batch_size):
            batch = records[b:b + batch_size]
            spans = detector.detect(batch)
            vecs = self.embed_mentions(batch, spans)
            for r, sp, v in zip(batch, spans, vecs, strict=True):
                self.index.add([r.id] * len(sp), sp, v)
            bar.update(len(batch))
        bar.close()
        return self.index

    def save(self, path: str | Path) -> Path:
        """A folder that :meth:`load` turns back into this retriever: encoder recipe, projector, index."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        hook = self.encoder.hooks[0]
        (path / "retriever.json").write_text(json.dumps({
            "model": self.encoder.model_id, "layer": hook.layer, "module": hook.module,
            "max_length": self.encoder.max_length, "description_template": self.description_template,
            "candidates_factor": self.candidates_factor, "encoder_fingerprint": self.encoder.fingerprint()}, indent=2))
        self.projector.save(path / "projector")
        if self.index is not None:
            self.index.save(path / "index")
        return path

    @classmethod
    def load(cls, path: str | Path, *, encoder: MentionEncoder | None = None, dtype: str = "float32",
             show_progress: bool = True) -> NERRetriever:
        path = Path(path)
        if not (path / "retriever.json").is_file():
            raise NERRetrieverError(f"{path} is not a saved NER Retriever (no retriever.json)")
        cfg = json.loads((path / "retriever.json").read_text())
        encoder = encoder or MentionEncoder.load(cfg["model"], layer=cfg["layer"], module=cfg["module"], dtype=dtype,
                                                 max_length=cfg["max_length"], show_progress=show_progress)
        index = MentionIndex.load(path / "index") if (path / "index" / "mentions.faiss").is_file() else None
        return cls(encoder, MentionProjector.load(path / "projector"), index,
                   description_template=cfg["description_template"], candidates_factor=cfg["candidates_factor"],
                   show_progress=show_progress)

    def search(self, description: str, k: int = 10) -> list[TypeHit]:
        """Documents mentioning an entity of the described type, best first."""
        if self.index is None:
            raise NERRetrieverError("nothing is indexed yet: call index_records first (or load an index)")
        return self.index.search_vector(self.embed_descriptions([description])[0], k, self.candidates_factor)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def type_relevance(records: Sequence[Record]) -> dict[str, set[str]]:
    """For each entity type, the ids of the documents that mention one (the relevant set of R-precision)."""
    out: dict[str, set[str]] = {}
    for r in records:
        for e in r.entities:
            out.setdefault(e.label, set()).add(r.id)
    return out


def evaluate_type_retrieval(search: Callable[[str, int], Sequence[str]], descriptions: Mapping[str, str],
                            relevant: Mapping[str, set[str]]) -> dict[str, Any]:
    """R-precision per type (retrieve R = |relevant| documents) and its macro average.

    ``search(description, k)`` returns document ids best first; types with no relevant document are skipped.
    """
    from openie.metrics import r_precision

    per_type = {}
    for label, desc in descriptions.items():
        rel = relevant.get(label, set())
        if not rel:
            continue
        per_type[label] = round(r_precision(list(search(desc, len(rel))), rel), 4)
    macro = round(float(np.mean(list(per_type.values()))), 4) if per_type else 0.0
    return {"macro_r_precision": macro, "per_type": per_type, "types": len(per_type)}


def collect_triplet_data(records: Sequence[Record], vectors: Sequence[np.ndarray], anchors: Mapping[str, np.ndarray],
                         *, max_per_type: int | None = None, seed: int = 0) -> TripletData:
    """Mention vectors (gold spans, in ``record.entities`` order of their unique spans) labelled by type."""
    rows, types = [], []
    for r, v in zip(records, vectors, strict=True):
        spans = sorted({e.span for e in r.entities})
        label = {e.span: e.label for e in r.entities}
        for j, sp in enumerate(spans):
            rows.append(v[j])
            types.append(label[sp])
    if max_per_type:
        rng = random.Random(seed)
        keep = []
        for t in sorted(set(types)):
            idx = [i for i, x in enumerate(types) if x == t]
            keep += sorted(rng.sample(idx, min(max_per_type, len(idx))))
        keep.sort()
        rows, types = [rows[i] for i in keep], [types[i] for i in keep]
    if not rows:
        raise NERRetrieverError("no gold mentions to train on")
    return TripletData(np.stack(rows), types, dict(anchors))


__all__ = [
    "DEFAULT_MODEL", "DEFAULT_MODULE", "GLiNERMentions", "GoldMentions", "HookPoint", "LLMMentions", "MentionDetector",
    "MentionEncoder", "MentionIndex", "MentionProjector", "NERRetriever", "NERRetrieverError", "ProjectorConfig",
    "TripletData", "TypeHit", "build_projector", "collect_triplet_data", "decoder_layers", "evaluate_type_retrieval",
    "scaled_width", "train_projector", "triplet_loss", "type_relevance",
]
