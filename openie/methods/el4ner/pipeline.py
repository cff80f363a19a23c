"""EL4NER (arXiv 2505.23038): an ensemble of small LLMs for training-free in-context NER.

The members are any list of (engine, adapter): heterogeneous engines, or several LoRA adapters on
one base served by one multi-LoRA engine (requests of members sharing an engine go out in one call
per stage). The pipeline, each stage switchable in :class:`EL4NERConfig` so that an ablation table
comes from one grid:

1. **Demonstrations** (:class:`SpanSimDemonstrations`). Every member proposes candidate spans
   zero-shot for the query and for pool sentences (pool spans are cached per member identity,
   template version and pool text: :class:`PoolSpanCache`). A pool sentence S' is ranked for the
   query S by ``SpanSim(S, S') = sum_s w(s) * max_c sim(s, c) / sum_s w(s)``: ``sim`` is the cosine
   of span embeddings (MiniLM by default), ``w`` a part-of-speech weight of the query span
   (proper nouns highest) from a :class:`PosTagger`. The top ``k`` become demonstrations.
   ``demonstrations="sentence"`` ranks by sentence embeddings instead, ``"none"`` runs zero-shot.
2. **Extraction** (:class:`UnionExtraction`): every member, few-shot, spans grounded to offsets;
   the union over members goes on.
3. **Typing** (:class:`MajorityVoteTyper`): every member types every span few-shot; the majority
   label wins, a tie goes to the tied label with the highest log-likelihood summed over members.
4. **Verification** (:class:`LoglikelihoodVerifier`): one member judges each (span, type) in
   context by comparing the log-likelihoods of the continuations " true" and " false"; spans
   judged false are dropped.

Each prediction keeps in ``meta["el4ner"]`` what every stage did (demonstrations and their
scores, candidates per member, votes, verifier scores), so a researcher can see why a span is
there or not.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from openie.engines.base import Engine, Generation, GenerationRequest, Score, ScoreRequest, capabilities
from openie.errors import OpenIEError
from openie.grounding import ground_all
from openie.methods.icl import ExtractionStats, extract_in_batches
from openie.methods.icl.pipeline import record_coverage
from openie.records import Entity, Record
from openie.schema import Schema
from prompts.formats import ParseProblem, complete_prefix, load_json_leniently
from prompts.registry import TemplateRegistry, default_registry
from retrievers.base import RecordPool

SPANS_TEMPLATE = "ner.el4ner-spans.v1"
TYPE_TEMPLATE = "ner.el4ner-type.v1"
VERIFY_TEMPLATE = "ner.el4ner-verify.v1"
TRUE, FALSE = " true", " false"
SPAN_LIST_SCHEMA: dict[str, Any] = {"type": "array", "items": {"type": "string"}}

#: Universal POS weights of a span's words for SpanSim: proper nouns count most, function words
#: least. Tags missing here get ``EL4NERConfig.default_pos_weight``.
DEFAULT_POS_WEIGHTS: dict[str, float] = {"PROPN": 1.0, "NOUN": 0.6, "NUM": 0.5, "X": 0.5, "ADJ": 0.4,
                                         "SYM": 0.3, "VERB": 0.3, "ADV": 0.2}


class EL4NERError(OpenIEError, ValueError):
    """An invalid EL4NER configuration or member list (names the option)."""


# =============================================================================================
# members
# =============================================================================================

@dataclass(frozen=True)
class Member:
    """One ensemble member: an engine and the LoRA adapter it is asked with (None: the base)."""

    name: str
    engine: Engine
    adapter: str | None = None

    @property
    def identity(self) -> str:
        """What its outputs depend on: base weights and adapter content (keys the pool-span cache)."""
        return f"{self.engine.model_id}|{self.engine.adapter_fingerprint(self.adapter)}"


@dataclass(frozen=True)
class MemberSpec:
    """A member as a config names it; :func:`build_members` turns specs into :class:`Member` s."""

    name: str
    model: str
    adapter: str | None = None       # adapter name the requests carry
    adapter_path: str | None = None  # where it is loaded from (None: already known to the engine)
    backend: str = "auto"


def build_members(specs: Sequence[MemberSpec], make_engine: Callable[..., Engine] | None = None,
                  **engine_options: Any) -> list[Member]:
    """One engine per (backend, model), loaded with every adapter its members name.

    Members that are adapters on one base thus share one multi-LoRA engine, and their requests
    go out together. ``make_engine(backend, model, adapters, **engine_options)`` defaults to
    :func:`openie.engines.create_engine`.
    """
    if make_engine is None:
        from openie.engines import create_engine as make_engine
    _check_names([s.name for s in specs])
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for s in specs:
        adapters = groups.setdefault((s.backend, s.model), {})
        if s.adapter_path is not None:
            if s.adapter is None:
                raise EL4NERError(f"member {s.name!r}: an adapter_path needs an adapter name")
            adapters[s.adapter] = str(s.adapter_path)
    engines = {key: make_engine(key[0], key[1], adapters or None, **engine_options)
               for key, adapters in groups.items()}
    return [Member(s.name, engines[(s.backend, s.model)], s.adapter) for s in specs]


def _check_names(names: Sequence[str]) -> None:
    if not names:
        raise EL4NERError("EL4NER needs at least one member")
    dupes = sorted(n for n, c in Counter(names).items() if c > 1)
    if dupes:
        raise EL4NERError(f"member names must be unique, repeated: {dupes}")


# =============================================================================================
# configuration
# =============================================================================================

@dataclass(frozen=True)
class EL4NERConfig:
    """Every stage's switch and knob; :meth:`from_options` reads them from an experiment config."""

    demonstrations: str = "span"        # span (SpanSim) | sentence (sentence embeddings) | none (zero-shot)
    k: int = 4
    pool_spans: str = "model"           # model: members' zero-shot spans (cached) | gold: the pool's gold spans
    pool_prefilter: int | None = None   # SpanSim only over the N pool sentences closest by sentence embedding
    union: bool = True                  # False: only ``single_member`` proposes spans (stages 1 and 2)
    vote: bool = True                   # False: only ``single_member`` types
    verify: bool = True
    single_member: int = 0
    verifier: int = 0
    typing: str = "score"               # score: a member's vote is its most likely type | generate: its answer
    typing_score: str = "mean"          # sum | mean log-likelihood of " TYPE" (mean: long names not penalised)
    type_demos: int | None = 8          # typing examples at most (one per gold mention of the demonstrations;
                                        # the most relevant demonstrations' mentions are kept); None: all
    verify_margin: float = 0.0          # keep when logp(" true") - logp(" false") (- prior) >= margin
    verify_calibration: str = "none"    # none | content_free: subtract the verifier's prior, its margin on the
                                        # content-free query ("N/A" in "N/A", same type, same demonstrations)
    verify_demonstrations: bool = True  # show a true and a false judgement per demonstration
    pos_tagger: str = "auto"            # textblob | shape | auto (textblob when installed, else shape)
    pos_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_POS_WEIGHTS))
    default_pos_weight: float = 0.1
    span_weight: str = "max"            # a span's weight: max | mean over its words' weights
    encoder: str = "minilm"             # sentence-transformers model for span and sentence similarity
    max_tokens: int = 96
    constrained: bool = True            # JSON-list schema for span answers, allowed type names for generated types
    seed: int = 0
    spans_template: str = SPANS_TEMPLATE
    type_template: str = TYPE_TEMPLATE
    verify_template: str = VERIFY_TEMPLATE

    def __post_init__(self) -> None:
        choices = {"demonstrations": ("span", "sentence", "none"), "pool_spans": ("model", "gold"),
                   "typing": ("score", "generate"), "typing_score": ("sum", "mean"),
                   "pos_tagger": ("auto", "textblob", "shape"), "span_weight": ("max", "mean"),
                   "verify_calibration": ("none", "content_free")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise EL4NERError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.demonstrations != "none" and self.k < 1:
            raise EL4NERError(f"k must be >= 1 with demonstrations={self.demonstrations!r}, got {self.k}")
        if self.type_demos is not None and self.type_demos < 0:
            raise EL4NERError(f"type_demos must be >= 0 (or none), got {self.type_demos}")
        if self.pool_prefilter is not None and self.pool_prefilter < self.k:
            raise EL4NERError(f"pool_prefilter ({self.pool_prefilter}) must be at least k ({self.k})")
        if self.max_tokens < 1:
            raise EL4NERError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if any(w < 0 for w in self.pos_weights.values()) or self.default_pos_weight < 0:
            raise EL4NERError("part-of-speech weights must be >= 0")
        object.__setattr__(self, "pos_weights", dict(self.pos_weights))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> EL4NERConfig:
        """From an experiment's ``method.options``; unknown keys are an error that lists the known ones."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise EL4NERError(f"method options: unknown EL4NER options {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in options.items():
            default = getattr(cls(), key)
            if isinstance(default, bool):
                value = value.strip().lower() in ("1", "true", "yes", "on") if isinstance(value, str) else bool(value)
            elif key in ("pool_prefilter", "type_demos"):
                value = None if value in (None, "", "none") else int(value)
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            elif key == "pos_weights":
                value = {str(t): float(w) for t, w in dict(value).items()}
            values[key] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def members_for(self, ensemble: bool, members: Sequence[Member]) -> list[Member]:
        return list(members) if ensemble else [members[self.single_member]]


#: Options that wire the method into a run rather than change a stage: the ``members`` (a list of
#: ``{name, model, adapter, adapter_path, backend}``; default one member, the run's model and adapter),
#: the demonstration ``pool`` (``NAME:SPLIT`` or a records file; default the dataset's train split)
#: and ``pool_size`` (a seeded sample of it, seeded by ``seed``).
RUN_OPTIONS: dict[str, Any] = {"members": None, "pool": None, "pool_size": None}
OPTIONS: dict[str, Any] = {**EL4NERConfig().to_dict(), **RUN_OPTIONS}
MEMBER_KEYS = ("name", "model", "adapter", "adapter_path", "backend")


def split_options(options: Mapping[str, Any]) -> tuple[EL4NERConfig, dict[str, Any]]:
    """``method.options`` -> (the stages' config, the run options); unknown keys name the known ones."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise EL4NERError(f"method options: unknown EL4NER options {unknown}; known: {sorted(OPTIONS)}")
    run = {key: options.get(key, default) for key, default in RUN_OPTIONS.items()}
    if run["pool_size"] not in (None, "", "none"):
        run["pool_size"] = int(run["pool_size"])
        if run["pool_size"] < 1:
            raise EL4NERError(f"pool_size must be >= 1, got {run['pool_size']}")
    else:
        run["pool_size"] = None
    return EL4NERConfig.from_options({k: v for k, v in options.items() if k not in RUN_OPTIONS}), run


def member_specs(value: Any, *, model: str, adapter: str | None = None, backend: str = "auto") -> list[MemberSpec]:
    """The ``members`` option as specs. Missing ``model`` / ``backend``: the run's; no list at all:
    one member, the run's model with the run's adapter. A plain string item is a model name."""
    if value in (None, "", []):
        return [MemberSpec(_member_name(model, adapter), model, adapter, None, backend)]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise EL4NERError(f"members: expected a JSON list of members, got {value!r}") from None
    if not isinstance(value, list | tuple):
        raise EL4NERError(f"members must be a list of {{{', '.join(MEMBER_KEYS)}}}, got {type(value).__name__}")
    specs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            item = {"model": item}
        if not isinstance(item, Mapping):
            raise EL4NERError(f"members[{i}]: expected a mapping with keys {', '.join(MEMBER_KEYS)}, got {item!r}")
        unknown = sorted(set(item) - set(MEMBER_KEYS))
        if unknown:
            raise EL4NERError(f"members[{i}]: unknown keys {unknown}; known: {list(MEMBER_KEYS)}")
        m, a = str(item.get("model") or model), item.get("adapter")
        if item.get("adapter_path") and not a:
            raise EL4NERError(f"members[{i}]: an adapter_path needs an adapter name")
        specs.append(MemberSpec(str(item.get("name") or _member_name(m, a)), m, a,
                                str(item["adapter_path"]) if item.get("adapter_path") else None,
                                str(item.get("backend") or backend)))
    _check_names([s.name for s in specs])
    return specs


def _member_name(model: str, adapter: str | None) -> str:
    return Path(model).name + (f"+{adapter}" if adapter else "")


# =============================================================================================
# part-of-speech tagging (SpanSim weights)
# =============================================================================================

Tag = tuple[int, int, str]  # (start, end, universal POS tag)


@runtime_checkable
class PosTagger(Protocol):
    """Words of a text with character offsets and a Universal Dependencies POS tag each."""

    name: str

    def tag(self, text: str) -> list[Tag]: ...


#: Penn Treebank -> Universal POS (the UD project's conversion table, without features).
PENN_TO_UPOS: dict[str, str] = {
    "NNP": "PROPN", "NNPS": "PROPN", "NN": "NOUN", "NNS": "NOUN", "CD": "NUM",
    "JJ": "ADJ", "JJR": "ADJ", "JJS": "ADJ", "RB": "ADV", "RBR": "ADV", "RBS": "ADV", "WRB": "ADV",
    "VB": "VERB", "VBD": "VERB", "VBG": "VERB", "VBN": "VERB", "VBP": "VERB", "VBZ": "VERB", "MD": "AUX",
    "PRP": "PRON", "PRP$": "PRON", "WP": "PRON", "WP$": "PRON", "EX": "PRON",
    "DT": "DET", "PDT": "DET", "WDT": "DET", "IN": "ADP", "RP": "ADP", "CC": "CCONJ", "TO": "PART",
    "POS": "PART", "UH": "INTJ", "FW": "X", "LS": "X", "SYM": "SYM", "$": "SYM", "#": "SYM",
}


def align_tokens(text: str, tokens: Sequence[str]) -> list[tuple[int, int] | None]:
    """Character span of each token, located left to right; None for a token the text lacks
    (a tagger that normalised quotes, say)."""
    out: list[tuple[int, int] | None] = []
    cursor = 0
    for token in tokens:
        at = text.find(token, cursor) if token else -1
        if at < 0:
            out.append(None)
            continue
        out.append((at, at + len(token)))
        cursor = at + len(token)
    return out


class TextBlobPosTagger:
    """TextBlob's ``PatternTagger``: the Brill lexicon and rules of Pattern (CLiPS), shipped inside
    the ``textblob`` wheel, so it runs offline with no data download (unlike NLTK's own tagger,
    whose model is fetched at run time). Penn tags, mapped to universal ones."""

    def __init__(self) -> None:
        try:
            from importlib.metadata import version

            from textblob.en.taggers import PatternTagger
        except ImportError as err:
            raise EL4NERError("pos_tagger='textblob' needs the textblob package (pip install textblob; "
                              "its tagger lexicon ships in the wheel)") from err
        self._tagger = PatternTagger()
        self.name = f"textblob-{version('textblob')}-pattern"

    def tag(self, text: str) -> list[Tag]:
        if not text.strip():
            return []
        pairs = self._tagger.tag(text)
        out = []
        for (word, penn), span in zip(pairs, align_tokens(text, [w for w, _ in pairs]), strict=True):
            if span is not None:
                upos = PENN_TO_UPOS.get(penn, "PUNCT" if not any(c.isalnum() for c in word) else "X")
                out.append((span[0], span[1], upos))
        return out


_TOKEN = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)
_CLOSED_CLASS: dict[str, str] = {
    **dict.fromkeys("a an the this that these those each every some any no all both either neither".split(), "DET"),
    **dict.fromkeys("in on at by for with from to of into onto over under about after before between through "
                    "during without within against among across behind beyond near since until upon via per "
                    "like than".split(), "ADP"),
    **dict.fromkeys("and or but nor yet so".split(), "CCONJ"),
    **dict.fromkeys("if because although though while whereas unless whether".split(), "SCONJ"),
    **dict.fromkeys("i me my mine you your yours he him his she her hers it its we us our ours they them "
                    "their theirs who whom whose which what myself yourself himself herself itself "
                    "ourselves themselves there".split(), "PRON"),
    **dict.fromkeys("is are was were be been being am has have had do does did will would shall should "
                    "can could may might must".split(), "AUX"),
    **dict.fromkeys("not n't 's".split(), "PART"),
    **dict.fromkeys("very also just only too then now here when where why how".split(), "ADV"),
}


class ShapePosTagger:
    """Not a trained tagger: a capitalisation and word-shape heuristic, the fallback where no real
    tagger is installed. Closed-class words come from a short list; a capitalised, camel-case or
    all-caps word is called PROPN (so a capitalised sentence-initial common word is misread as a
    proper noun, and lower-cased text such as tweets has none); digits are NUM, punctuation PUNCT;
    every other word is X (unknown), never guessed as NOUN or VERB."""

    name = "shape-heuristic"

    def tag(self, text: str) -> list[Tag]:
        out = []
        for m in _TOKEN.finditer(text):
            word, low = m.group(), m.group().lower()
            if not any(c.isalnum() for c in word):
                upos = "PUNCT"
            elif re.fullmatch(r"[\d.,:/%-]+", word):
                upos = "NUM"
            elif low in _CLOSED_CLASS and not (word.isupper() and len(word) > 1):
                upos = _CLOSED_CLASS[low]
            elif word[0].isupper() or any(c.isupper() for c in word[1:]):
                upos = "PROPN"
            else:
                upos = "X"
            out.append((m.start(), m.end(), upos))
        return out


def load_pos_tagger(name: str = "auto") -> PosTagger:
    """``textblob`` (a real tagger, needs the package), ``shape`` (the heuristic), or ``auto``."""
    if name == "shape":
        return ShapePosTagger()
    if name == "textblob":
        return TextBlobPosTagger()
    if name == "auto":
        try:
            return TextBlobPosTagger()
        except EL4NERError:
            return ShapePosTagger()
    raise EL4NERError(f"unknown pos_tagger {name!r}; choose textblob, shape or auto")


def span_weights(spans: Sequence[tuple[int, int]], tags: Sequence[Tag], weights: Mapping[str, float],
                 default: float = 0.1, how: str = "max") -> list[float]:
    """w(s) of each span: the ``max`` (or ``mean``) weight of the tagged words it overlaps."""
    out = []
    for start, end in spans:
        ws = [weights.get(upos, default) for s, e, upos in tags if s < end and start < e]
        out.append(default if not ws else (max(ws) if how == "max" else sum(ws) / len(ws)))
    return out


def span_sim(query_vectors: np.ndarray, weights: Sequence[float], pool_vectors: np.ndarray) -> float:
    """``SpanSim(S, S') = sum_s w(s) * max_c sim(s, c) / sum_s w(s)`` over unit span vectors.

    ``query_vectors`` (n, d) are the spans s of the query S with weights w(s); ``pool_vectors``
    (m, d) the candidate spans c of a pool sentence S'. Zero when either side has no span.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.size == 0 or len(pool_vectors) == 0 or w.sum() <= 0:
        return 0.0
    best = (np.asarray(query_vectors, dtype=np.float64) @ np.asarray(pool_vectors, dtype=np.float64).T).max(axis=1)
    return float((w * best).sum() / w.sum())


# =============================================================================================
# engine calls: one call per engine per stage (members on one multi-LoRA engine share it)
# =============================================================================================

@dataclass
class EL4NERStats(ExtractionStats):
    """``ExtractionStats`` plus scoring requests and the pool-span cache's use."""

    score_requests: int = 0
    pool_span_hits: int = 0
    pool_span_misses: int = 0


def _grouped(items: Sequence[tuple[Member, Any]], call: Callable[[Engine, list[Any]], list[Any]]) -> list[Any]:
    by_engine: dict[int, list[int]] = {}
    for i, (member, _) in enumerate(items):
        by_engine.setdefault(id(member.engine), []).append(i)
    out: list[Any] = [None] * len(items)
    for positions in by_engine.values():
        results = call(items[positions[0]][0].engine, [items[i][1] for i in positions])
        for i, r in zip(positions, results, strict=True):
            out[i] = r
    return out


def generate(items: Sequence[tuple[Member, GenerationRequest]], stats: ExtractionStats) -> list[Generation]:
    gens = _grouped(items, lambda engine, reqs: engine.generate(reqs)) if items else []
    stats.prompts += len(gens)
    stats.prompt_tokens += sum(g.prompt_tokens for g in gens)
    stats.completion_tokens += sum(g.completion_tokens for g in gens)
    return gens


def score(items: Sequence[tuple[Member, ScoreRequest]], stats: EL4NERStats) -> list[Score]:
    scores = _grouped(items, lambda engine, reqs: engine.loglikelihood(reqs)) if items else []
    stats.score_requests += len(scores)
    return scores


# =============================================================================================
# span proposal (stages 1 and 2)
# =============================================================================================

@dataclass
class ProposedSpans:
    """One member's spans of one text, grounded (label ""), with what could not be read."""

    entities: list[Entity] = field(default_factory=list)
    problems: list[ParseProblem] = field(default_factory=list)
    exact: int = 0
    fuzzy: int = 0


def parse_span_list(text: str, record: Record) -> ProposedSpans:
    """A JSON list of span texts (or ``{"entities": [...]}``) -> grounded spans; never raises."""
    out = ProposedSpans()
    value, note = load_json_leniently(text)
    if note:
        out.problems.append(ParseProblem("syntax", note, text[:200]))
    if isinstance(value, dict):
        value = value.get("entities", value.get("spans"))
    if isinstance(value, str):
        value = [value]
    if value is None:
        return out
    if not isinstance(value, list):
        out.problems.append(ParseProblem("invalid", f"expected a JSON list, got {type(value).__name__}"))
        return out
    items = []
    for v in value:
        if isinstance(v, dict):
            v = v.get("text")
        if isinstance(v, str) and v.strip():
            items.append(v)
        else:
            out.problems.append(ParseProblem("invalid", "a list item that is not a non-empty string was skipped",
                                             str(v)[:100]))
    seen: set[tuple[int, int]] = set()
    for span, a in zip(items, ground_all(record.text, items), strict=True):
        if not a.found:
            out.problems.append(ParseProblem("not_found", f"{span!r} does not occur in the input", span))
            continue
        out.exact += a.status.value == "exact"
        out.fuzzy += a.status.value == "fuzzy"
        if (a.start, a.end) not in seen:
            seen.add((a.start, a.end))  # type: ignore[arg-type]
            out.entities.append(Entity(a.start, a.end, "", record.text[a.start:a.end]))  # type: ignore[arg-type]
    out.entities.sort()
    return out


def _types(schema: Schema) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description} for t in schema.entity_types]


def _sorted(entities: Iterable[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e.start, e.end, e.label))


@dataclass
class SpanProposer:
    """Renders span-list prompts (zero- or few-shot) and reads answers back to grounded spans."""

    schema: Schema
    registry: TemplateRegistry
    template: str = SPANS_TEMPLATE
    max_tokens: int = 96
    constrained: bool = True

    @property
    def version(self) -> str:
        return self.registry.get(self.template).version

    def prompt(self, record: Record, demos: Sequence[Record] = ()) -> str:
        # constrained answers are compact JSON (the grammar allows no optional whitespace): demos match them
        separators = (",", ":") if self.constrained else (", ", ": ")
        blocks = [{"input": d.text, "output": json.dumps([e.text for e in _sorted(d.entities)], ensure_ascii=False,
                                                         separators=separators)}
                  for d in reversed(demos)]  # most relevant last, closest to the query
        return self.registry.render(self.template, instruction=None, types=_types(self.schema), demos=blocks,
                                    query={"input": record.text})

    def request(self, member: Member, record: Record, demos: Sequence[Record] = ()) -> GenerationRequest:
        return GenerationRequest(prompt=self.prompt(record, demos), adapter=member.adapter, max_tokens=self.max_tokens,
                                 json_schema=SPAN_LIST_SCHEMA if self.constrained else None, stop=("\n",),
                                 template=self.version)

    def identity(self) -> dict[str, Any]:
        """What besides the member and the text changes a zero-shot answer (keys the pool-span cache)."""
        return {"template": self.version, "max_tokens": self.max_tokens, "constrained": self.constrained,
                "types": self.schema.entity_labels}


class PoolSpanCache:
    """Zero-shot spans of pool sentences per member, kept in memory and, with ``path``, in a JSONL
    file that later runs (and an interrupted run) reuse.

    Keyed by the member's identity (base model id + adapter fingerprint), the proposer's identity
    (template version, decoding settings, types) and the sentence text: a retrained adapter or an
    edited template misses the cache instead of serving stale spans.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self._spans: dict[str, list[tuple[int, int, str]]] = {}
        self.hits = self.misses = 0
        if self.path is not None and self.path.is_file():
            with self.path.open(encoding="utf-8") as fh:
                for line in fh:
                    try:
                        row = json.loads(line)
                        self._spans[row["key"]] = [(int(s), int(e), str(t)) for s, e, t in row["spans"]]
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # a line cut by a kill: recomputed

    @staticmethod
    def key(member: Member, proposer: dict[str, Any], text: str) -> str:
        blob = json.dumps({"member": member.identity, "proposer": proposer, "text": text}, sort_keys=True,
                          ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> list[tuple[int, int, str]] | None:
        found = self._spans.get(key)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put_many(self, items: Sequence[tuple[str, list[tuple[int, int, str]]]]) -> None:
        for key, spans in items:
            self._spans[key] = list(spans)
        if self.path is not None and items:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps({"key": k, "spans": [list(s) for s in v]}, ensure_ascii=False) + "\n"
                                 for k, v in items))

    def __len__(self) -> int:
        return len(self._spans)


# =============================================================================================
# stage 1: demonstrations by span similarity
# =============================================================================================

@dataclass
class DemonstrationChoice:
    """Stage 1's answer for one query: the demonstrations (most relevant first) and why."""

    records: list[Record]
    scores: list[float]
    sentence_scores: list[float]
    query_spans: list[tuple[int, int, str, float]] = field(default_factory=list)  # (start, end, text, w(s))

    def to_meta(self, mode: str) -> dict[str, Any]:
        return {"mode": mode, "ids": [r.id for r in self.records], "scores": [round(s, 6) for s in self.scores],
                "sentence_scores": [round(s, 6) for s in self.sentence_scores],
                "query_spans": [[s, e, t, round(w, 4)] for s, e, t, w in self.query_spans]}


class SpanSimDemonstrations:
    """Stage 1: the ``k`` pool sentences most similar to each query, by SpanSim or by sentence embedding.

    The query's candidate spans are the union of the members' zero-shot spans; so are a pool
    sentence's (``pool_spans="model"``, cached) unless the pool's gold spans are used. Ties (a
    query without spans) are broken by sentence similarity, then pool order; a pool sentence with
    the query's text or id is never chosen.
    """

    def __init__(self, pool: Sequence[Record], members: Sequence[Member], proposer: SpanProposer, encoder: Any,
                 tagger: PosTagger | None, config: EL4NERConfig, cache: PoolSpanCache, stats: EL4NERStats,
                 show_progress: bool = False):
        if not pool:
            raise EL4NERError(f"demonstrations={config.demonstrations!r} needs a non-empty pool")
        self.pool, self.members, self.proposer = RecordPool(pool), list(members), proposer
        self.encoder, self.tagger, self.config, self.cache, self.stats = encoder, tagger, config, cache, stats
        self.show_progress = show_progress
        self._vectors: dict[str, np.ndarray] = {}
        self._pool_vectors: np.ndarray | None = None

    # -- embeddings --------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors of texts, each text encoded once per extractor."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            vectors = np.asarray(self.encoder.encode(missing), dtype=np.float32)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            for t, v in zip(missing, vectors / np.where(norms > 0, norms, 1.0), strict=True):
                self._vectors[t] = v
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])

    def pool_vectors(self) -> np.ndarray:
        if self._pool_vectors is None:
            self._pool_vectors = self.embed(self.pool.texts)
        return self._pool_vectors

    # -- spans ---------------------------------------------------------------------------------
    def query_spans(self, records: Sequence[Record]) -> list[list[Entity]]:
        """Union of the members' zero-shot spans of each query (not cached: queries are seen once)."""
        items = [(m, self.proposer.request(m, r)) for r in records for m in self.members]
        texts = iter(g.text for g in generate(items, self.stats))
        out = []
        for r in records:
            found = {e.span: e for _ in self.members for e in parse_span_list(next(texts), r).entities}
            out.append(_sorted(found.values()))
        return out

    def pool_spans(self, positions: Iterable[int]) -> dict[int, list[str]]:
        """Candidate span texts of pool sentences: gold, or the members' zero-shot union (cached)."""
        positions = sorted(set(int(p) for p in positions))
        records = self.pool.records
        if self.config.pool_spans == "gold":
            return {p: list(dict.fromkeys(e.text for e in _sorted(records[p].entities))) for p in positions}
        ident = self.proposer.identity()
        keys = {(p, m.name): PoolSpanCache.key(m, ident, records[p].text) for p in positions for m in self.members}
        found: dict[str, list[tuple[int, int, str]] | None] = {}
        todo: list[tuple[str, int, Member]] = []  # one prompt per key: members of one identity answer alike
        for m in self.members:
            for p in positions:
                key = keys[(p, m.name)]
                if key not in found:
                    found[key] = self.cache.get(key)
                    if found[key] is None:
                        todo.append((key, p, m))
        self.stats.pool_span_hits += len(found) - len(todo)
        self.stats.pool_span_misses += len(todo)
        step = 256
        bar = tqdm(total=len(todo), desc="EL4NER pool spans", unit="prompt",
                   disable=not self.show_progress or len(todo) <= step)
        for at in range(0, len(todo), step):  # cached chunk by chunk: an interrupted run resumes
            chunk = todo[at:at + step]
            gens = generate([(m, self.proposer.request(m, records[p])) for _, p, m in chunk], self.stats)
            new = []
            for (key, p, _), g in zip(chunk, gens, strict=True):
                found[key] = [(e.start, e.end, e.text) for e in parse_span_list(g.text, records[p]).entities]
                new.append((key, found[key]))
            self.cache.put_many(new)
            bar.update(len(chunk))
        bar.close()
        return {p: list(dict.fromkeys(t for m in self.members for _, _, t in found[keys[(p, m.name)]] or ()))
                for p in positions}

    # -- ranking -------------------------------------------------------------------------------
    def weights(self, record: Record, spans: Sequence[Entity]) -> list[float]:
        if self.tagger is None:  # no tagger: every span counts the same
            return [1.0] * len(spans)
        tags = self.tagger.tag(record.text)
        return span_weights([e.span for e in spans], tags, self.config.pos_weights, self.config.default_pos_weight,
                            self.config.span_weight)

    def select(self, records: Sequence[Record]) -> list[DemonstrationChoice]:
        k = self.config.k
        sentence = self.embed([r.text for r in records]) @ self.pool_vectors().T if records else np.zeros((0, 0))
        eligible = [self.pool.eligible_positions(r, "ner", None) for r in records]
        if self.config.demonstrations == "sentence":
            out = []
            for sims, pos in zip(sentence, eligible, strict=True):
                order = sorted(pos, key=lambda p: (-round(float(sims[p]), 9), p))[:k]
                out.append(DemonstrationChoice([self.pool.records[p] for p in order],
                                               [float(sims[p]) for p in order], [float(sims[p]) for p in order]))
            return out
        limit = self.config.pool_prefilter
        candidates = [pos if limit is None else np.asarray(sorted(pos, key=lambda p: (-round(float(sims[p]), 9), p))[:limit])
                      for sims, pos in zip(sentence, eligible, strict=True)]
        queries = self.query_spans(records)
        pool_spans = self.pool_spans(p for c in candidates for p in c)
        # every candidate span of the batch in one matrix, pool sentence by pool sentence
        with_spans = [p for p in sorted(pool_spans) if pool_spans[p]]
        column = {p: i for i, p in enumerate(with_spans)}
        starts = np.cumsum([0] + [len(pool_spans[p]) for p in with_spans])[:-1]
        matrix = self.embed([t for p in with_spans for t in pool_spans[p]])
        out = []
        for record, sims, cands, spans in zip(records, sentence, candidates, queries, strict=True):
            weights = self.weights(record, spans)
            span_scores = np.zeros(len(with_spans))
            if spans and with_spans and sum(weights) > 0:  # SpanSim for all pool sentences at once
                best = np.maximum.reduceat(self.embed([e.text for e in spans]) @ matrix.T, starts, axis=1)
                span_scores = np.asarray(weights) @ best / sum(weights)
            scored = [(float(span_scores[column[int(p)]]) if int(p) in column else 0.0, int(p)) for p in cands]
            scored.sort(key=lambda sp: (-round(sp[0], 9), -round(float(sims[sp[1]]), 9), sp[1]))
            top = scored[:k]
            out.append(DemonstrationChoice([self.pool.records[p] for _, p in top], [s for s, _ in top],
                                           [float(sims[p]) for _, p in top],
                                           [(e.start, e.end, e.text, w) for e, w in zip(spans, weights, strict=True)]))
        return out


# =============================================================================================
# stage 2: few-shot extraction, union over members
# =============================================================================================

@dataclass
class UnionResult:
    """Stage 2 for one record: each member's spans and their union (label "")."""

    per_member: dict[str, list[Entity]]
    union: list[Entity]
    problems: list[ParseProblem]
    exact: int
    fuzzy: int
    cut: int = 0  # members' answers cut at max_tokens (their complete mentions kept)


class UnionExtraction:
    """Stage 2: every member extracts spans few-shot; a span any member found goes on."""

    def __init__(self, proposer: SpanProposer, stats: EL4NERStats):
        self.proposer, self.stats = proposer, stats

    def run(self, records: Sequence[Record], demos: Sequence[Sequence[Record]],
            members: Sequence[Member]) -> list[UnionResult]:
        items = [(m, self.proposer.request(m, r, d)) for r, d in zip(records, demos, strict=True) for m in members]
        answers = iter(generate(items, self.stats))
        out = []
        for r in records:
            per_member, problems, exact, fuzzy, cut = {}, [], 0, 0, 0
            for m in members:
                g = next(answers)
                cut += g.finish_reason == "length"
                got = parse_span_list(complete_prefix(g.text, "question") if g.finish_reason == "length" else g.text, r)
                per_member[m.name] = got.entities
                problems += [ParseProblem(p.kind, f"{m.name}: {p.detail}", p.fragment) for p in got.problems]
                exact, fuzzy = exact + got.exact, fuzzy + got.fuzzy
            union = _sorted({e.span: e for es in per_member.values() for e in es}.values())
            out.append(UnionResult(per_member, union, problems, exact, fuzzy, cut))
        return out


# =============================================================================================
# stage 3: typing by majority vote
# =============================================================================================

@dataclass
class TypedSpan:
    """A span's type after the vote, and the ballots behind it."""

    entity: Entity                         # labelled with the winner; score = the winner's share of votes
    votes: dict[str, str | None]           # member -> its type (None: an answer that names no type)
    tie: bool = False
    loglik: dict[str, float] = field(default_factory=dict)  # label -> log-likelihood summed over members

    def to_meta(self) -> dict[str, Any]:
        e = self.entity
        return {"span": [e.start, e.end, e.text], "label": e.label, "votes": self.votes, "tie": self.tie,
                "loglik": {k: round(v, 4) for k, v in self.loglik.items()}}


def majority(votes: Sequence[str | None], labels: Sequence[str]) -> list[str]:
    """The labels with the most votes, in schema order (several: a tie; all labels when nobody voted)."""
    counts = Counter(v for v in votes if v is not None)
    if not counts:
        return list(labels)
    top = max(counts.values())
    return [label for label in labels if counts.get(label) == top]


def read_type(text: str, labels: Sequence[str]) -> str | None:
    """The type a generated answer names: the first line, matched exactly, then case-insensitively,
    then as the longest type name it starts with; None when it names none."""
    answer = text.strip().splitlines()[0].strip().strip('."\'') if text.strip() else ""
    if answer in labels:
        return answer
    folded = {label.casefold(): label for label in labels}
    if answer.casefold() in folded:
        return folded[answer.casefold()]
    starts = [label for label in labels if answer.casefold().startswith(label.casefold())]
    return max(starts, key=len) if starts else None


class MajorityVoteTyper:
    """Stage 3: every voter types every span few-shot; the majority wins, a tie goes to the tied
    label with the highest log-likelihood (``typing_score``: sum or per-token mean) summed over the
    voters. ``typing="score"``: a voter's vote is its most likely type (one scoring request per
    type); ``"generate"``: its answer, constrained to the type names, scored only on ties."""

    def __init__(self, schema: Schema, registry: TemplateRegistry, config: EL4NERConfig, stats: EL4NERStats):
        self.schema, self.registry, self.config, self.stats = schema, registry, config, stats
        self.labels = schema.entity_labels
        if not self.labels:
            raise EL4NERError("the schema has no entity types to vote on")

    @property
    def version(self) -> str:
        return self.registry.get(self.config.type_template).version

    def prompt(self, record: Record, span: Entity, demos: Sequence[Record]) -> str:
        blocks = [{"input": d.text, "span": e.text, "output": e.label}
                  for d in reversed(demos) for e in _sorted(d.entities) if e.label in self.labels]
        if self.config.type_demos is not None:  # the last blocks come from the most relevant demonstrations
            blocks = blocks[len(blocks) - self.config.type_demos:] if self.config.type_demos else []
        return self.registry.render(self.config.type_template, instruction=None, types=_types(self.schema),
                                    demos=blocks, query={"input": record.text, "span": span.text})

    def _value(self, s: Score) -> float:
        return s.mean_logprob if self.config.typing_score == "mean" else s.logprob

    def _score_labels(self, jobs: Sequence[tuple[Member, str, Sequence[str]]]) -> list[dict[str, float]]:
        """Log-likelihood of each label continuation per (member, prompt, labels) job."""
        version = self.version
        items = [(m, ScoreRequest(prompt, " " + label, m.adapter, version)) for m, prompt, labels in jobs
                 for label in labels]
        values = iter(self._value(s) for s in score(items, self.stats))
        return [{label: next(values) for label in labels} for _, _, labels in jobs]

    def run(self, records: Sequence[Record], demos: Sequence[Sequence[Record]], spans: Sequence[Sequence[Entity]],
            voters: Sequence[Member]) -> list[list[TypedSpan]]:
        units = [(i, span, self.prompt(r, span, d)) for i, (r, d, ss) in enumerate(zip(records, demos, spans,
                                                                                       strict=True)) for span in ss]
        ballots: list[dict[str, str | None]] = []
        logliks: list[dict[str, float]] = []
        ties: list[list[str]] = []
        if self.config.typing == "score":
            scored = self._score_labels([(m, prompt, self.labels) for _, _, prompt in units for m in voters])
            for u in range(len(units)):
                per = scored[u * len(voters):(u + 1) * len(voters)]
                ballots.append({m.name: max(self.labels, key=lambda lab, s=s: (s[lab], -self.labels.index(lab)))
                                for m, s in zip(voters, per, strict=True)})
                logliks.append({label: sum(s[label] for s in per) for label in self.labels})
                ties.append(majority(list(ballots[-1].values()), self.labels))
        else:
            allowed = tuple(self.labels) if self.config.constrained else None
            version = self.version
            items = [(m, GenerationRequest(prompt=prompt, adapter=m.adapter, max_tokens=8, stop=("\n",),
                                           template=version, allowed_texts=allowed))
                     for _, _, prompt in units for m in voters]
            answers = iter(g.text for g in generate(items, self.stats))
            for _ in units:
                ballots.append({m.name: read_type(next(answers), self.labels) for m in voters})
                ties.append(majority(list(ballots[-1].values()), self.labels))
            tied = [u for u, t in enumerate(ties) if len(t) > 1]
            scored = self._score_labels([(m, units[u][2], ties[u]) for u in tied for m in voters])
            logliks = [{} for _ in units]
            for j, u in enumerate(tied):
                per = scored[j * len(voters):(j + 1) * len(voters)]
                logliks[u] = {label: sum(s[label] for s in per) for label in ties[u]}
        out: list[list[TypedSpan]] = [[] for _ in records]
        for (i, span, _), votes, ll, top in zip(units, ballots, logliks, ties, strict=True):
            label = top[0] if len(top) == 1 else max(top, key=lambda lab: (ll[lab], -self.labels.index(lab)))
            share = sum(v == label for v in votes.values()) / len(votes)
            entity = Entity(span.start, span.end, label, span.text, score=round(share, 4))
            out[i].append(TypedSpan(entity, votes, len(top) > 1, ll))
        return out


# =============================================================================================
# stage 4: verification by log-likelihood
# =============================================================================================

@dataclass
class Verdict:
    typed: TypedSpan
    true: float
    false: float
    kept: bool
    prior: float | None = None  # the content-free margin subtracted (verify_calibration=content_free)

    def to_meta(self) -> dict[str, Any]:
        e = self.typed.entity
        out = {"span": [e.start, e.end, e.text], "label": e.label, "true": round(self.true, 4),
               "false": round(self.false, 4), "kept": self.kept}
        if self.prior is not None:
            out["prior"] = round(self.prior, 4)
        return out


class LoglikelihoodVerifier:
    """Stage 4: one member judges each (span, type) in its sentence; kept when
    ``logp(" true") - logp(" false") >= verify_margin`` (summed over each answer's tokens).

    A small model's answer carries a strong prior for one word whatever the span. With
    ``verify_calibration=content_free`` that prior is measured per query and type, as contextual
    calibration does (Zhao et al., 2021): the same prompt with "N/A" as sentence and span; the
    span is kept when its margin exceeds the prior's by ``verify_margin``.

    With ``verify_demonstrations`` each demonstration contributes one gold (span, type) judged
    true and the same span with another type judged false, in a seeded order per query.
    """

    def __init__(self, schema: Schema, registry: TemplateRegistry, config: EL4NERConfig, stats: EL4NERStats):
        self.schema, self.registry, self.config, self.stats = schema, registry, config, stats

    @property
    def version(self) -> str:
        return self.registry.get(self.config.verify_template).version

    def demo_blocks(self, record: Record, demos: Sequence[Record]) -> list[dict[str, str]]:
        if not self.config.verify_demonstrations:
            return []
        labels = self.schema.entity_labels
        blocks = []
        for d in reversed(demos):
            gold = [e for e in _sorted(d.entities) if e.label in labels]
            if not gold:
                continue
            e = gold[0]
            blocks.append({"input": d.text, "span": e.text, "type": e.label, "output": "true"})
            if len(labels) > 1:
                other = labels[(labels.index(e.label) + 1) % len(labels)]
                blocks.append({"input": d.text, "span": e.text, "type": other, "output": "false"})
        random.Random(f"{self.config.seed}:{record.id}").shuffle(blocks)
        return blocks

    def prompt(self, record: Record, entity: Entity, blocks: Sequence[dict[str, str]], *,
               content_free: bool = False) -> str:
        text, span = ("N/A", "N/A") if content_free else (record.text, entity.text)
        return self.registry.render(self.config.verify_template, instruction=None, demos=list(blocks),
                                    query={"input": text, "span": span, "type": entity.label,
                                           "description": self.schema.description(entity.label)})

    def run(self, records: Sequence[Record], demos: Sequence[Sequence[Record]], typed: Sequence[Sequence[TypedSpan]],
            verifier: Member) -> list[list[Verdict]]:
        version = self.version
        calibrate = self.config.verify_calibration == "content_free"
        units: list[tuple[TypedSpan, str, str | None]] = []
        for r, d, ts in zip(records, demos, typed, strict=True):
            blocks = self.demo_blocks(r, d)
            units += [(t, self.prompt(r, t.entity, blocks),
                       self.prompt(r, t.entity, blocks, content_free=True) if calibrate else None) for t in ts]
        prior_prompts = list(dict.fromkeys(p for _, _, p in units if p is not None))  # one per query and type
        prompts = [prompt for _, prompt, _ in units] + prior_prompts
        items = [(verifier, ScoreRequest(prompt, answer, verifier.adapter, version))
                 for prompt in prompts for answer in (TRUE, FALSE)]
        scores = score(items, self.stats)
        margins = [scores[2 * j].logprob - scores[2 * j + 1].logprob for j in range(len(prompts))]
        prior_of = dict(zip(prior_prompts, margins[len(units):], strict=True))
        verdicts = []
        for j, (t, _, prior_prompt) in enumerate(units):
            prior = prior_of[prior_prompt] if prior_prompt is not None else None
            verdicts.append(Verdict(t, scores[2 * j].logprob, scores[2 * j + 1].logprob,
                                    margins[j] - (prior or 0.0) >= self.config.verify_margin, prior))
        it = iter(verdicts)
        return [[next(it) for _ in ts] for ts in typed]


# =============================================================================================
# the extractor
# =============================================================================================

@dataclass
class EL4NERExtractor:
    """The four stages over a list of members; sits where :class:`~openie.methods.icl.InContextExtractor`
    sits (``extract_batch``, ``stats``, ``task``, ``engine``, ``demonstrations``).

    ``pool`` holds the labelled demonstration sentences; ``encoder`` embeds spans and sentences
    (anything with ``encode(texts) -> (n, d) array``; default the packaged MiniLM,
    ``retrievers.dense.SentenceEncoder(config.encoder)``, loaded on first use); ``pos_tagger``
    defaults to ``load_pos_tagger(config.pos_tagger)``; ``span_cache`` keeps pool spans (give it a
    path to keep them across runs).
    """

    members: Sequence[Member]
    schema: Schema
    pool: Sequence[Record] = ()
    config: EL4NERConfig = field(default_factory=EL4NERConfig)
    encoder: Any = None
    pos_tagger: PosTagger | None = None
    span_cache: PoolSpanCache = field(default_factory=PoolSpanCache)
    registry: TemplateRegistry | None = None
    batch_size: int = 32
    show_progress: bool = False
    stats: EL4NERStats = field(default_factory=EL4NERStats)
    task: str = "ner"
    demonstrations: None = None  # EL4NER picks its own; their ids land in meta["demo_ids"]

    def __post_init__(self) -> None:
        self.members = list(self.members)
        _check_names([m.name for m in self.members])
        c = self.config
        for option in ("single_member", "verifier"):
            if not 0 <= getattr(c, option) < len(self.members):
                raise EL4NERError(f"{option}={getattr(c, option)} is not a member index (0..{len(self.members) - 1})")
        self._check_capabilities()
        self.registry = self.registry or default_registry()
        self.proposer = SpanProposer(self.schema, self.registry, c.spans_template, c.max_tokens, c.constrained)
        self.extraction = UnionExtraction(self.proposer, self.stats)
        self.typer = MajorityVoteTyper(self.schema, self.registry, c, self.stats)
        self.verifier = LoglikelihoodVerifier(self.schema, self.registry, c, self.stats)
        self.selector: SpanSimDemonstrations | None = None
        if c.demonstrations != "none":
            if self.encoder is None:
                from retrievers.dense import SentenceEncoder

                self.encoder = SentenceEncoder(c.encoder, show_progress=False)
            if self.pos_tagger is None and c.demonstrations == "span":
                self.pos_tagger = load_pos_tagger(c.pos_tagger)
            self.selector = SpanSimDemonstrations(self.pool, c.members_for(c.union, self.members), self.proposer,
                                                  self.encoder, self.pos_tagger, c, self.span_cache, self.stats,
                                                  self.show_progress)

    def _check_capabilities(self) -> None:
        """Refuse up front a member whose engine cannot serve its stages (declared capabilities):
        typing reads log-likelihoods (every vote under typing=score, ties under typing=generate),
        verification scores " true" against " false", constrained typing restricts the answer to the
        type names, constrained span answers are decoded under a JSON schema."""
        c = self.config

        def refuse(option: str, member: Member, what: str, fix: str) -> None:
            raise EL4NERError(f"{option}: {what}, and member {member.name!r}'s engine "
                              f"({getattr(member.engine, 'model_id', member.engine)!r}) cannot; {fix}")

        if c.verify:
            verifier = self.members[c.verifier]
            if not capabilities(verifier.engine).loglikelihood:
                refuse("verify", verifier, "EL4NER verifies each span by log-likelihood", "use an engine that scores "
                       "continuations (an OpenAI-compatible endpoint only where it returns prompt log-probabilities), "
                       "another verifier, or verify=false")
        for m in c.members_for(c.vote, self.members):
            caps = capabilities(m.engine)
            if not caps.loglikelihood:
                refuse("typing", m, f"EL4NER types spans by log-likelihood ({'every vote' if c.typing == 'score' else 'ties'} "
                       f"under typing={c.typing})", "use an engine that scores continuations, or vote=false with a "
                       "single_member that does")
            if c.typing == "generate" and c.constrained and not caps.allowed_texts:
                refuse("constrained", m, "typing=generate restricts each answer to the type names (allowed_texts)",
                       "use the vllm, vllm-server or hf backend, typing=score, or constrained=false")
        for m in c.members_for(c.union, self.members):
            if c.constrained and not capabilities(m.engine).structured_outputs:
                refuse("constrained", m, "span answers are decoded under a JSON schema (structured outputs)",
                       "use an engine with structured outputs, or constrained=false")

    @classmethod
    def from_options(cls, members: Sequence[Member], schema: Schema, options: Mapping[str, Any], *,
                     default_pool: str | None = None, data_root: str | None = None,
                     span_cache: str | Path | None = None, batch_size: int = 32, encoder: Any = None,
                     pos_tagger: PosTagger | None = None, show_progress: bool = False) -> EL4NERExtractor:
        """An extractor from ``method.options`` (:data:`OPTIONS`) over already built ``members``
        (:func:`member_specs` + :func:`build_members`). The pool is loaded only when the stages
        use demonstrations; ``span_cache`` is a JSONL file shared by every run that names it."""
        config, run = split_options(options)
        pool: list[Record] = []
        if config.demonstrations != "none":
            from openie.methods.demonstrations import load_pool_sources

            source = run["pool"] or default_pool
            if not source:
                raise EL4NERError(f"demonstrations={config.demonstrations!r} needs a pool: method option "
                                  "pool=NAME:SPLIT or a records file")
            try:
                pool = load_pool_sources([source] if isinstance(source, str) else list(source), task="ner",
                                         data_root=data_root)
            except ValueError as err:
                raise EL4NERError(f"pool: {err}") from None
            if run["pool_size"] is not None and run["pool_size"] < len(pool):
                keep = sorted(random.Random(config.seed).sample(range(len(pool)), run["pool_size"]))
                pool = [pool[i] for i in keep]
        return cls(members, schema, pool, config, encoder=encoder, pos_tagger=pos_tagger,
                   span_cache=PoolSpanCache(span_cache), batch_size=batch_size, show_progress=show_progress)

    @property
    def engine(self) -> Engine:
        return self.members[0].engine

    def describe(self) -> dict[str, Any]:
        """Everything that changes the predictions, for a run's config (resume refuses a change)."""
        return {"config": self.config.to_dict(),
                "members": [{"name": m.name, "model": m.engine.model_id, "adapter": m.adapter,
                             "adapter_fingerprint": m.engine.adapter_fingerprint(m.adapter)} for m in self.members],
                "templates": {"spans": self.proposer.version, "type": self.typer.version,
                              "verify": self.verifier.version},
                "pos_tagger": getattr(self.pos_tagger, "name", None),
                "encoder": getattr(self.encoder, "model_name", type(self.encoder).__name__ if self.encoder else None),
                "pool_size": len(self.pool), "pool_ids_sha256": hashlib.sha256(
                    "\n".join(f"{r.id}\t{r.text}" for r in self.pool).encode("utf-8")).hexdigest()}

    def extract(self, records: Iterable[Record], total: int | None = None) -> Iterator[Record]:
        """Predictions in input order, batch by batch."""
        return extract_in_batches(self, records, total=total, desc="EL4NER")

    def extract_batch(self, batch: Sequence[Record]) -> list[Record]:
        c = self.config
        records = [r.without_annotations() for r in batch]
        # stage 1
        choices = self.selector.select(records) if self.selector is not None else [
            DemonstrationChoice([], [], []) for _ in records]
        demos = [ch.records for ch in choices]
        # stage 2
        found = self.extraction.run(records, demos, c.members_for(c.union, self.members))
        # stage 3
        typed = self.typer.run(records, demos, [f.union for f in found], c.members_for(c.vote, self.members))
        # stage 4
        verdicts = (self.verifier.run(records, demos, typed, self.members[c.verifier]) if c.verify else
                    [[Verdict(t, float("nan"), float("nan"), True) for t in ts] for ts in typed])
        out = []
        for record, choice, f, ts, vs in zip(records, choices, found, typed, verdicts, strict=True):
            pred = record.without_annotations()
            pred.entities = sorted(v.typed.entity for v in vs if v.kept)
            pred.meta["parse_problems"] = [vars(p) for p in f.problems]
            pred.meta["alignment"] = {"exact": f.exact, "fuzzy": f.fuzzy,
                                      "not_found": sum(p.kind == "not_found" for p in f.problems)}
            pred.meta["demo_ids"] = [d.id for d in choice.records]
            pred.meta["cut_at_max_tokens"] = f.cut
            pred.meta["coverage"] = record_coverage(  # every prompt holds the whole sentence (EL4NER does not chunk)
                record, [None], {"prompts": len(c.members_for(c.union, self.members)), "cut_at_max_tokens": f.cut,
                                 "salvaged": f.cut, "retried": 0, "labels_per_prompt": len(self.schema.entity_labels),
                                 "prompt_tokens": 0}, pred.meta["alignment"]["not_found"])
            pred.meta["el4ner"] = {
                "demonstrations": choice.to_meta(c.demonstrations),
                "candidates": {name: [[e.start, e.end, e.text] for e in es] for name, es in f.per_member.items()},
                "union": [[e.start, e.end, e.text] for e in f.union],
                "typing": [t.to_meta() for t in ts],
                "verification": ({"member": self.members[c.verifier].name, "margin": c.verify_margin,
                                  "calibration": c.verify_calibration,
                                  "judgements": [v.to_meta() for v in vs]} if c.verify else None),
            }
            self.stats.add(pred)
            out.append(pred)
        return out
